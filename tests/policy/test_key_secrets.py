"""Names, labels and bodies of key Secrets (pure rules)."""

from __future__ import annotations

import base64

from scim_operator import key_secrets as ks

REF = ks.KeyRef("scim", "eng", "2819c223-7f76-453a-919d-413861904646", "apps")
TEAM = ks.KeyRef("scim", "eng", None, "scim")


def test_names_and_aliases_are_deterministic_and_distinct() -> None:
    assert ks.secret_name(REF) == "litellm-key-eng-2819c223-7f76-453a-919d-413861904646"
    assert ks.secret_name(TEAM) == "litellm-team-key-eng"
    assert ks.key_alias(REF) == "scim:scim:eng:2819c223-7f76-453a-919d-413861904646@apps"
    assert ks.key_alias(TEAM) == "scim:scim:eng:@team@scim"
    long = ks.KeyRef("scim", "g" * 200, "U_ser" * 30, "scim")
    name = ks.secret_name(long)
    assert len(name) <= 253 and name == name.lower() and "_" not in name
    assert name != ks.secret_name(ks.KeyRef("scim", "g" * 200, "U_ser" * 29, "scim"))


def test_label_values_stay_valid() -> None:
    assert ks.label_value("eng") == "eng"
    hashed = ks.label_value("x" * 64)
    assert len(hashed) <= 63 and hashed != ks.label_value("x" * 65)
    assert ks.label_value("has space").startswith("h-")
    assert ks.labels(TEAM)[ks.LABEL_KIND] == "team" and ks.LABEL_USER not in ks.labels(TEAM)


def test_body_round_trip_carries_no_plaintext_outside_data() -> None:
    retiring = [ks.Retiring("ab" * 32, 1_800_000_000.5)]
    body = ks.secret_body(REF, plaintext="sk-secret", base_url="http://litellm:4000", key_hash="cd" * 32,
                          issued_at=1_700_000_000.25, rotation_request="r1", retiring_keys=retiring,
                          owner=None)
    assert base64.b64decode(body["data"]["api-key"]).decode() == "sk-secret"
    assert "sk-secret" not in str(body["metadata"])
    assert "ownerReferences" not in body["metadata"]
    back = ks.read(body)
    assert back is not None
    assert (back.ref, back.key_hash, back.rotation_request) == (REF, "cd" * 32, "r1")
    assert back.issued_at == 1_700_000_000.25
    assert back.retiring == retiring
    assert body["metadata"]["annotations"][ks.ANN_ISSUED] == "2023-11-14T22:13:20.250Z"


def test_secrets_not_written_by_the_operator_are_ignored() -> None:
    assert ks.read({"metadata": {"name": "x", "namespace": "scim", "labels": {}}}) is None
    assert ks.retiring({ks.ANN_RETIRING: "not json"}) == []
