"""QIDO-RS query model and attribute matching (PS3.18 §8.3.4, §10.6; PS3.4 C.2.2.2).

PLACEHOLDER interface — the QIDO-RS work fills this module in. Pure code, no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from aifi.dicomweb.store import DicomJson


class QueryLevel(enum.Enum):
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


@dataclass(slots=True)
class QidoQuery:
    level: QueryLevel
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    limit: int = 1000
    offset: int = 0


@dataclass(slots=True)
class QueryResult:
    matches: list[DicomJson] = field(default_factory=list)
    remaining: int = 0
    """How many further matches exist beyond ``offset + len(matches)``."""
    warnings: list[str] = field(default_factory=list)
