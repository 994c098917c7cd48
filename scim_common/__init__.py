"""The bottom layer both halves and the command line share: connecting to the API server and naming
its refusals, configuration, logging, the SCIM token Secret's format, and time stamps. It imports
nothing of the project but the contract (``scim_contract``)."""
