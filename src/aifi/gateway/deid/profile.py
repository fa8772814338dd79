"""The pseudonymisation profile a hospital chooses (the ``pseudonymisation:`` section of the
gateway's YAML): the PS3.15 Annex E options, the private attributes it deems safe, the
pseudonym prefix and the range of the per-patient date offset."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from aifi.gateway.deid.types import Option

#: Basic + Retain Longitudinal Temporal Information with Modified Dates + Retain Patient
#: Characteristics + Clean Descriptors: routing needs age, sex, body part and descriptions.
AIFI_DEFAULT_OPTIONS = frozenset(
    {
        Option.BASIC,
        Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        Option.RETAIN_PATIENT_CHARACTERISTICS,
        Option.CLEAN_DESCRIPTORS,
    }
)

#: CID 7050 methods without a column in Table E.1-1: they act on pixel data (burned-in text,
#: faces), which the gateway never decodes; such instances are quarantined instead.
UNSUPPORTED_OPTIONS = frozenset(
    {Option.CLEAN_PIXEL_DATA, Option.CLEAN_RECOGNIZABLE_VISUAL_FEATURES}
)


def _hex_or_int(value: Any) -> Any:
    """Accept 25, "0x0019" and "0019" (hex, as DICOM writes tags; int() takes the 0x)."""
    if isinstance(value, str):
        return int(value, 16)
    return value


def _option(value: Any) -> Any:
    """Accept an Option, its CID 7050 code ("113107") or its name ("CLEAN_DESCRIPTORS")."""
    if isinstance(value, str) and value in Option.__members__:
        return Option[value]
    return value


HexInt = Annotated[int, BeforeValidator(_hex_or_int)]
OptionField = Annotated[Option, BeforeValidator(_option)]


class SafePrivate(BaseModel):
    """One private attribute deemed safe (PS3.15 E.3.10): the private creator, the odd group
    and the element byte within the creator's block ((gggg,xxEE) -> ``element`` = 0xEE)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    creator: str = Field(min_length=1, max_length=64)
    group: HexInt = Field(ge=0x0009, le=0xFFFF)
    element: HexInt = Field(ge=0x00, le=0xFF)

    @model_validator(mode="after")
    def _odd_group(self) -> SafePrivate:
        if self.group % 2 == 0:
            raise ValueError(f"group {self.group:04X} is not a private (odd) group")
        return self


class Profile(BaseModel):
    """What the pseudonymiser does (PS3.15 Annex E options, CID 7050 codes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    options: frozenset[OptionField] = AIFI_DEFAULT_OPTIONS
    safe_private: frozenset[SafePrivate] = frozenset()
    """Kept only with Retain Safe Private; every other private element is removed."""
    pseudonym_prefix: str = Field(default="AIFI", pattern=r"^[A-Z0-9]{0,8}$")
    """Starts every patient pseudonym (Patient ID and Patient's Name)."""
    date_offset_min_days: int = Field(default=-3652, ge=-36500, le=36500)
    date_offset_max_days: int = Field(default=-365, ge=-36500, le=36500)
    """The per-patient date offset is a whole number of days in [min, max], drawn from the
    keyed HMAC of the patient (Retain Longitudinal Temporal Information Modified Dates)."""

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if Option.BASIC not in self.options:
            raise ValueError("the Basic Application Confidentiality Profile (113100) is required")
        unsupported = self.options & UNSUPPORTED_OPTIONS
        if unsupported:
            names = ", ".join(sorted(option.name for option in unsupported))
            raise ValueError(f"options not supported (pixel data is never decoded): {names}")
        dates = {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}
        if dates <= self.options:
            raise ValueError("retain full dates and retain modified dates exclude each other")
        if self.date_offset_min_days > self.date_offset_max_days:
            raise ValueError("date_offset_min_days is greater than date_offset_max_days")
        if re.fullmatch(r"\d*", self.pseudonym_prefix) and self.pseudonym_prefix:
            raise ValueError("pseudonym_prefix needs at least one letter")
        return self

    def has(self, option: Option) -> bool:
        """Whether ``option`` is selected."""
        return option in self.options

    def safe_private_keys(self) -> frozenset[tuple[str, int, int]]:
        """(creator, group, element byte) of every private attribute listed safe."""
        return frozenset((item.creator, item.group, item.element) for item in self.safe_private)
