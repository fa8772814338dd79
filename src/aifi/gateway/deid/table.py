"""PS3.15 Table E.1-1 as data: the action of every attribute under a set of options.

The table lives in ``table_e1_1.tsv`` beside this module (edition in its header). This module
reads it once and resolves, for a chosen set of options, one action per tag (a dict, so the
engine does one look-up per element) plus the few wildcard rows ((50xx,xxxx) Curve Data,
(60xx,3000) Overlay Data, (60xx,4000) Overlay Comments). The private row
("(gggg,eeee) where gggg is odd") is not a tag: the engine handles private elements itself,
using the row's option column (Retain Safe Private: C) to decide.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from aifi.gateway.deid.types import Option

TABLE_FILE = "table_e1_1.tsv"
#: The edition of PS3.15 whose Table E.1-1 the file holds (also in the file's header).
TABLE_EDITION = "DICOM PS3.15 2024b"


class Action(enum.Enum):
    """An action code of PS3.15 Table E.1-1 (E.1.1 "Application Level Confidentiality
    Profile Attributes"), compound codes included."""

    D = "D"  # replace with a non-zero length dummy value consistent with the VR
    Z = "Z"  # replace with a zero length value (or a dummy)
    X = "X"  # remove
    K = "K"  # keep (non-sequence attributes); sequences are cleaned item by item
    C = "C"  # clean: replace identifying information with similar meaning values
    U = "U"  # replace with a consistent non-zero length UID
    X_Z = "X/Z"  # X unless Z is required to keep the IOD valid (Type 3 vs Type 2)
    X_D = "X/D"  # X unless D is required (Type 3 vs Type 1)
    Z_D = "Z/D"  # Z unless D is required (Type 2 vs Type 1)
    X_Z_D = "X/Z/D"  # X, Z or D per the attribute's Type in the IOD
    X_Z_U = "X/Z/U*"  # X, Z or, for a sequence of UID references, U on the UIDs inside


#: The option columns of the table, in the file's column order.
OPTION_COLUMNS: tuple[Option, ...] = (
    Option.RETAIN_SAFE_PRIVATE,
    Option.RETAIN_UIDS,
    Option.RETAIN_DEVICE_IDENTITY,
    Option.RETAIN_INSTITUTION_IDENTITY,
    Option.RETAIN_PATIENT_CHARACTERISTICS,
    Option.RETAIN_LONGITUDINAL_FULL_DATES,
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
    Option.CLEAN_DESCRIPTORS,
    Option.CLEAN_STRUCTURED_CONTENT,
    Option.CLEAN_GRAPHICS,
)

PRIVATE_ROW = "(ggg1,eeee)"


@dataclass(frozen=True, slots=True)
class Row:
    """One row of Table E.1-1."""

    tag: str
    """``(GGGG,EEEE)`` in hex; ``x`` is a wildcard digit; ``(ggg1,eeee)`` the private row."""
    name: str
    basic: Action
    options: dict[Option, Action]

    def action(self, options: Iterable[Option]) -> Action:
        """The action under ``options``: an option's column overrides the Basic Profile;
        where two chosen options both name an action, C (clean) wins over K (keep), the
        more protective of the two (the table has no rule for such a conflict)."""
        chosen = [self.options[option] for option in options if option in self.options]
        if not chosen:
            return self.basic
        return Action.C if Action.C in chosen else Action.K


@dataclass(frozen=True, slots=True)
class ResolvedTable:
    """The table resolved for one set of options."""

    exact: dict[int, Action]
    """tag (as an int) -> action, for every row with a plain tag."""
    patterns: tuple[tuple[int, int, Action], ...]
    """(mask, value, action): ``tag & mask == value`` selects the wildcard rows."""
    private: Action
    """The action for private elements: X, or C under Retain Safe Private."""

    def lookup(self, tag: int) -> Action | None:
        """The action for a standard (even group) tag, or None when the table is silent."""
        action = self.exact.get(tag)
        if action is not None:
            return action
        for mask, value, pattern_action in self.patterns:
            if tag & mask == value:
                return pattern_action
        return None


def _parse_action(text: str) -> Action:
    return Action(text.strip())


@cache
def rows() -> tuple[Row, ...]:
    """Every row of the table file (read once)."""
    text = resources.files(__package__).joinpath(TABLE_FILE).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    header = lines[0].split("\t")
    expected = ["tag", "name", "basic", *(option.name for option in OPTION_COLUMNS)]
    if header != expected:
        raise ValueError(f"{TABLE_FILE}: unexpected columns {header}")
    result: list[Row] = []
    for line in lines[1:]:
        cells = line.split("\t")
        cells += [""] * (len(expected) - len(cells))
        options = {
            option: _parse_action(cell)
            for option, cell in zip(OPTION_COLUMNS, cells[3:], strict=True)
            if cell.strip()
        }
        result.append(Row(cells[0], cells[1], _parse_action(cells[2]), options))
    return tuple(result)


def _pattern(tag: str) -> tuple[int, int]:
    """``(60xx,3000)`` -> (mask, value) for ``tag & mask == value``."""
    digits = tag[1:5] + tag[6:10]
    mask = int("".join("0" if d == "x" else "F" for d in digits), 16)
    value = int("".join("0" if d == "x" else d for d in digits), 16)
    return mask, value


@cache
def resolve(options: frozenset[Option]) -> ResolvedTable:
    """The table under ``options`` (cached per option set)."""
    exact: dict[int, Action] = {}
    patterns: list[tuple[int, int, Action]] = []
    private = Action.X
    for row in rows():
        action = row.action(options)
        if row.tag == PRIVATE_ROW:
            private = action
        elif "x" in row.tag:
            mask, value = _pattern(row.tag)
            patterns.append((mask, value, action))
        else:
            exact[int(row.tag[1:5] + row.tag[6:10], 16)] = action
    return ResolvedTable(exact, tuple(patterns), private)
