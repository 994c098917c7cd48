"""The ``Drifted`` condition a drift check leaves on a ScimUser or ScimGroup, as ``kubectl describe``
shows it."""

from __future__ import annotations

from typing import Any

from scim_operator.objects import drift_condition


def _drifted(conditions: list[dict[str, Any]]) -> dict[str, Any]:
    return next(c for c in conditions if c["type"] == "Drifted")


def test_a_correction_stays_readable_until_something_new_is_found() -> None:
    quiet = drift_condition(None, [], False, "LiteLLM matches this resource", 1)
    assert _drifted(quiet)["reason"] == "InSync" and _drifted(quiet)["status"] == "False"

    corrected = drift_condition(quiet, ["user_role is 'proxy_admin', expected 'internal_user'"], True, "ok", 1)
    entry = _drifted(corrected)
    assert (entry["status"], entry["reason"]) == ("False", "Corrected")
    assert "user_role is 'proxy_admin'" in entry["message"]

    # The next checks find LiteLLM matching: the last correction is what a reader wants to see, and
    # the status is unchanged, so there is nothing to write.
    assert drift_condition(corrected, [], False, "ok", 1) == corrected
    # A later generation moves observedGeneration only.
    later = _drifted(drift_condition(corrected, [], False, "ok", 2))
    assert later == {**entry, "observedGeneration": 2}

    # New drift replaces it.
    text = "alias is 'x', expected 'y'"
    found = _drifted(drift_condition(corrected, [text], False, "ok", 2))
    assert (found["status"], found["reason"], found["message"]) == ("True", "DriftDetected", text)
    assert _drifted(drift_condition([found], [], False, "LiteLLM matches", 2))["reason"] == "InSync"


def test_a_drift_reported_but_not_corrected_clears_when_litellm_matches_again() -> None:
    reported = drift_condition(None, ["member alice missing from team"], False, "ok", 3)
    assert _drifted(reported)["status"] == "True"
    in_sync = "LiteLLM matches this group"
    cleared = _drifted(drift_condition(reported, [], False, in_sync, 3))
    assert (cleared["status"], cleared["reason"], cleared["message"]) == ("False", "InSync", in_sync)
