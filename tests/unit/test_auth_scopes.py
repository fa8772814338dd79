"""SMART system scopes (App Launch 2.x §Scopes): one parser for the grant, the role check
and the check at the resource endpoint (``aifi.hub.auth.policy``)."""

from __future__ import annotations

import pytest

from aifi.hub.auth.clients import scope_allowed_for_role
from aifi.hub.auth.policy import fhir_scope_satisfied, system_scope, system_scope_within


@pytest.mark.parametrize(
    ("scope", "parsed"),
    [
        ("system/Task.cruds", ("Task", "cruds")),
        ("system/*.rs", ("*", "rs")),
        ("system/Task.read", ("Task", "rs")),
        ("system/Task.write", ("Task", "cud")),
        ("system/Task.*", ("Task", "cruds")),
        ("system/Task.sr", None),  # v2 letters in the order c r u d s
        ("system/Task.", None),
        ("system/task.rs", None),
        ("user/Task.rs", None),
        ("system/Task.rs?status=completed", None),
        ("dicomweb.read", None),
    ],
)
def test_system_scope_grammar(scope: str, parsed: tuple[str, str] | None) -> None:
    assert system_scope(scope) == parsed


def test_narrowing_and_checking() -> None:
    assert system_scope_within("system/Task.rs", "system/*.cruds")
    assert system_scope_within("system/Task.read", "system/Task.rs")
    assert not system_scope_within("system/*.rs", "system/Task.cruds")
    assert not system_scope_within("system/Task.c", "system/Task.rs")
    assert fhir_scope_satisfied(frozenset({"system/*.rs"}), "Observation", "search")
    assert not fhir_scope_satisfied(frozenset({"system/Task.r"}), "Task", "search")
    assert not fhir_scope_satisfied(frozenset({"dicomweb.read"}), "Task", "read")


def test_roles() -> None:
    assert scope_allowed_for_role("hospital", "system/Task.cruds")
    assert not scope_allowed_for_role("hospital", "system/AuditEvent.rs")
    assert scope_allowed_for_role("admin", "system/AuditEvent.rs")
    assert not scope_allowed_for_role("performer", "system/Task.rs")
    assert scope_allowed_for_role("performer", "worklist.performer")
    assert not scope_allowed_for_role("hospital", "admin")
