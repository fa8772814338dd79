"""Step 2 of a forwarding round: each claimed original pseudonymised (PS3.15 Annex E), or
the reason it is not sent.

The outcome per instance: ready to send (its pseudonymised Part 10 bytes and the mapping
facts), ``QUARANTINED`` (the pseudonymiser's :class:`~aifi.gateway.deid.types.Quarantine`,
e.g. burned-in annotation; bytes that are not a readable instance; a failure of the
pseudonymiser itself — whatever could not be pseudonymised is never sent, and its original
is kept for an operator) or ``FAILED`` (the original file cannot be read: gone or purged).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aifi.errors import InvalidRequest
from aifi.gateway.deid.types import Pseudonymised, Quarantine
from aifi.gateway.forward.stow_client import Part
from aifi.gateway.persistence.tables import InstanceState

log = logging.getLogger(__name__)


class FilePseudonymiser(Protocol):
    """What forwarding needs of the pseudonymiser (:class:`aifi.gateway.deid.Pseudonymiser`):
    Part 10 in, Part 10 out with the mapping facts; raises
    :class:`~aifi.gateway.deid.types.Quarantine` for an instance that must not leave, and
    :class:`~aifi.errors.InvalidRequest` for bytes that are not a readable instance.
    Deterministic: the same original gives the same bytes and facts."""

    def pseudonymise_file(self, data: bytes) -> tuple[bytes, Pseudonymised]: ...


@dataclass(frozen=True, slots=True)
class Claim:
    """One ``gw_instance`` row a round holds: the fencing token is (pk, attempt) while the
    row is ``FORWARDING``."""

    pk: int
    attempt: int
    file: str | None
    study_instance_uid: str


@dataclass(frozen=True, slots=True)
class Ready:
    """A claimed instance, pseudonymised: the part to send and its mapping facts."""

    claim: Claim
    part: Part
    facts: Pseudonymised


def prepare(
    pseudonymiser: FilePseudonymiser, data_dir: Path, claims: Sequence[Claim]
) -> tuple[list[Ready], dict[int, tuple[InstanceState, str]]]:
    """The pseudonymised instances, and the rows that are not sent with their new state
    and reason (module docstring)."""
    ready: list[Ready] = []
    dropped: dict[int, tuple[InstanceState, str]] = {}
    for claim in claims:
        if claim.file is None:
            reason = "the original file was purged: it cannot be sent again"
            dropped[claim.pk] = (InstanceState.FAILED, reason)
            continue
        try:
            data = (data_dir / claim.file).read_bytes()
            out, facts = pseudonymiser.pseudonymise_file(data)
        except Quarantine as exc:
            dropped[claim.pk] = (InstanceState.QUARANTINED, exc.reason)
        except InvalidRequest as exc:
            reason = f"cannot be pseudonymised: {exc.reason}"
            dropped[claim.pk] = (InstanceState.QUARANTINED, reason)
        except OSError as exc:
            reason = f"cannot read the original file {claim.file}: {exc.strerror or exc}"
            dropped[claim.pk] = (InstanceState.FAILED, reason)
        except Exception as exc:  # a bug: never send what could not be pseudonymised
            log.exception("instance row %d: pseudonymisation failed", claim.pk)
            reason = f"pseudonymisation failed: {type(exc).__name__}: {exc}"
            dropped[claim.pk] = (InstanceState.QUARANTINED, reason)
        else:
            ready.append(Ready(claim, Part(str(facts.dataset.SOPInstanceUID), out), facts))
    return ready, dropped
