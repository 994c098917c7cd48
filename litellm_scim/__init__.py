"""litellm-scim: the command line that runs the SCIM endpoint, the operator and the local system."""
