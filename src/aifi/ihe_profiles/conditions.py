"""The conditions of the routing rules (:mod:`aifi.ihe_profiles.rules`): each judges one
aspect of a study — per series (modality, body part, description, SOP class, slice
thickness, contrast) or per study (age) — on header values normalised by
:mod:`aifi.ihe_profiles.normalise`, and says what it saw (``(passed, seen)``, which
:class:`aifi.ihe_profiles.rules.Check` keeps) so that a decision can be explained.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydicom.uid import UID

from aifi.ihe_profiles.normalise import (
    BODY_PART_FIELDS,
    BODY_REGIONS,
    DESCRIPTION_FIELDS,
    SeriesFacts,
    StudyFacts,
    TextField,
    body_regions,
    contrast_agent_given,
    contrast_in_text,
    normalise_modality,
    strip_accents,
)

# --- Conditions -----------------------------------------------------------------------------

Scope = Literal["series", "study"]


class _Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    scope: ClassVar[Scope] = "series"

    def describe(self) -> str:
        raise NotImplementedError

    def test_series(self, series: SeriesFacts, study: StudyFacts) -> tuple[bool, str]:
        """(passed, why) for one series; series-level conditions override this."""
        raise NotImplementedError

    def test_study(self, study: StudyFacts) -> tuple[bool, str]:
        """(passed, why) for the study; study-level conditions override this."""
        raise NotImplementedError


def _texts(series: SeriesFacts, fields: Iterable[str]) -> list[tuple[str, str]]:
    return [(field, value) for field in fields for value in series.text(field)]


class ModalityCondition(_Condition):
    """The series' Modality (0008,0060), normalised, is one of ``values``."""

    kind: Literal["modality"] = "modality"
    values: Annotated[list[str], Field(min_length=1)]

    @field_validator("values")
    @classmethod
    def _normalise(cls, values: list[str]) -> list[str]:
        return list(dict.fromkeys(normalise_modality(v) for v in values))

    def describe(self) -> str:
        return f"modality in {', '.join(self.values)}"

    def test_series(self, series: SeriesFacts, study: StudyFacts) -> tuple[bool, str]:
        if not series.raw_modality:
            return False, "no Modality"
        arrow = f" -> {series.modality}" if series.modality != series.raw_modality else ""
        return series.modality in self.values, f"Modality '{series.raw_modality}'{arrow}"


class BodyPartCondition(_Condition):
    """A canonical region in ``values`` is named by Body Part Examined or a description,
    and none in ``exclude`` is (see :func:`~aifi.ihe_profiles.normalise.body_regions`)."""

    kind: Literal["body_part"] = "body_part"
    values: Annotated[list[str], Field(min_length=1)]
    exclude: list[str] = []
    fields: Annotated[list[TextField], Field(min_length=1)] = list(BODY_PART_FIELDS)

    @field_validator("values", "exclude")
    @classmethod
    def _canonical(cls, values: list[str]) -> list[str]:
        result: list[str] = []
        for value in values:
            found = set({value.upper()} & BODY_REGIONS or body_regions(value))
            if len(found) != 1:
                known = ", ".join(sorted(BODY_REGIONS))
                raise ValueError(f"unknown body region {value!r}; known regions: {known}")
            result.append(found.pop())
        return list(dict.fromkeys(result))

    def describe(self) -> str:
        text = f"body part in {', '.join(self.values)}"
        return text + (f", not {', '.join(self.exclude)}" if self.exclude else "")

    def test_series(self, series: SeriesFacts, study: StudyFacts) -> tuple[bool, str]:
        seen: set[str] = set()
        parts = []
        for field, value in _texts(series, self.fields):
            regions = body_regions(value)
            seen |= regions
            parts.append(f"{field} '{value}' -> {', '.join(sorted(regions)) or '-'}")
        wanted = sorted(seen & set(self.values))
        unwanted = sorted(seen & set(self.exclude))
        if unwanted:
            verdict = f"shows excluded {', '.join(unwanted)}"
        elif wanted:
            verdict = f"shows {', '.join(wanted)}"
        else:
            verdict = f"no {', '.join(self.values)}" if len(self.values) <= 4 else "none listed"
        why = "; ".join(parts) if parts else "no BodyPartExamined or description"
        return bool(wanted) and not unwanted, f"{why} => {verdict}"


class DescriptionCondition(_Condition):
    """A regular expression in ``patterns`` (case- and accent-insensitive) matches one of
    ``fields``, and none in ``exclude`` does."""

    kind: Literal["description"] = "description"
    patterns: list[str] = []
    exclude: list[str] = []
    fields: Annotated[list[TextField], Field(min_length=1)] = list(DESCRIPTION_FIELDS)

    @field_validator("patterns", "exclude")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return patterns

    @model_validator(mode="after")
    def _something(self) -> DescriptionCondition:
        if not self.patterns and not self.exclude:
            raise ValueError("a description condition needs 'patterns' or 'exclude'")
        return self

    def describe(self) -> str:
        parts = [f"matches {' or '.join(f'/{p}/' for p in self.patterns)}"] if self.patterns else []
        parts += [f"not /{p}/" for p in self.exclude]
        return f"description {', '.join(parts)}"

    @staticmethod
    def _hits(patterns: list[str], texts: list[tuple[str, str]]) -> list[str]:
        return [
            f"{field} '{value}' ~ /{pattern}/"
            for pattern in patterns
            for field, value in texts
            if re.search(pattern, value, re.IGNORECASE)
            or re.search(pattern, strip_accents(value), re.IGNORECASE)
        ]

    def test_series(self, series: SeriesFacts, study: StudyFacts) -> tuple[bool, str]:
        texts = _texts(series, self.fields)
        if not texts:
            return not self.patterns, f"no {'/'.join(self.fields)}"
        hits, excluded = self._hits(self.patterns, texts), self._hits(self.exclude, texts)
        if excluded:
            return False, "excluded: " + "; ".join(excluded)
        if self.patterns and not hits:
            return False, "no match in " + "; ".join(f"{f} '{v}'" for f, v in texts)
        return True, "; ".join(hits) or "no excluded text"


class AgeCondition(_Condition):
    """Patient age at the study: ``min_years`` ≤ age, and the age in completed years (as
    people state it) ≤ ``max_years`` — so ``max_years: 19`` admits 19 years and 11 months."""

    kind: Literal["age"] = "age"
    scope: ClassVar[Scope] = "study"
    min_years: Annotated[float, Field(ge=0)] = 0
    max_years: Annotated[float | None, Field(ge=0)] = None

    @model_validator(mode="after")
    def _ordered(self) -> AgeCondition:
        if self.max_years is not None and self.max_years < self.min_years:
            raise ValueError(f"max_years {self.max_years} < min_years {self.min_years}")
        return self

    def describe(self) -> str:
        low = f"{self.min_years:g}"
        return (
            f"age {low}-{self.max_years:g} years"
            if self.max_years is not None
            else (f"age >= {low} years")
        )

    def test_study(self, study: StudyFacts) -> tuple[bool, str]:
        age = study.patient_age_years
        if age is None:
            return False, study.age_source
        within = age >= self.min_years and (self.max_years is None or int(age) <= self.max_years)
        return within, study.age_source


class SopClassCondition(_Condition):
    """An instance of the series has one of the SOP Class UIDs in ``uids``; only such
    instances become workitem inputs."""

    kind: Literal["sop_class"] = "sop_class"
    uids: Annotated[list[str], Field(min_length=1)]

    def describe(self) -> str:
        return f"SOP class in {', '.join(_uid_name(u) for u in self.uids)}"

    def test_series(self, series: SeriesFacts, study: StudyFacts) -> tuple[bool, str]:
        seen = dict.fromkeys(i.sop_class_uid for i in series.instances)
        names = ", ".join(_uid_name(u) for u in seen) or "none"
        return any(u in self.uids for u in seen), f"SOPClassUID {names}"


def _uid_name(uid: str) -> str:
    name = UID(uid).name
    return name if name and name != uid else uid


class SliceThicknessCondition(_Condition):
    """Every (non-localizer) image of the series has Slice Thickness ≤ ``max_mm``."""

    kind: Literal["slice_thickness"] = "slice_thickness"
    max_mm: Annotated[float, Field(gt=0)]

    def describe(self) -> str:
        return f"slice thickness <= {self.max_mm:g} mm"

    def test_series(self, series: SeriesFacts, study: StudyFacts) -> tuple[bool, str]:
        if not series.slice_thicknesses:
            return False, "no SliceThickness"
        shown = ", ".join(f"{t:g}" for t in sorted(series.slice_thicknesses))
        return max(series.slice_thicknesses) <= self.max_mm, f"SliceThickness {shown} mm"


class ContrastCondition(_Condition):
    """Contrast given (``required: true``) or not (``false``), judged per series from, in
    this order: Series Description, Contrast/Bolus Agent/Route, Protocol Name, then the
    study's and the order's descriptions. With no evidence, contrast counts as not given."""

    kind: Literal["contrast"] = "contrast"
    required: bool = True
    _ORDER: ClassVar[tuple[str, ...]] = (
        "SeriesDescription",
        "ContrastBolusAgent",
        "ProtocolName",
        "StudyDescription",
        "RequestedProcedureDescription",
        "ScheduledProcedureStepDescription",
        "PerformedProcedureStepDescription",
    )

    def describe(self) -> str:
        return "contrast given" if self.required else "no contrast"

    def test_series(self, series: SeriesFacts, study: StudyFacts) -> tuple[bool, str]:
        given, why = _contrast(series, self._ORDER)
        return bool(given) == self.required, why


def _contrast(series: SeriesFacts, order: Iterable[str]) -> tuple[bool | None, str]:
    for source in order:
        if source == "ContrastBolusAgent":
            values = series.contrast_agents
            found = {contrast_agent_given(v) for v in values} - {None}
        else:
            values = series.text(source)
            found = {contrast_in_text(v) for v in values} - {None}
        if len(found) == 1:
            given = found.pop()
            shown = ", ".join(f"'{v}'" for v in values)
            return given, f"{source} {shown} -> {'contrast' if given else 'no contrast'}"
    return None, "no contrast evidence (no ContrastBolusAgent/Route; descriptions silent)"


Condition = Annotated[
    ModalityCondition
    | BodyPartCondition
    | DescriptionCondition
    | AgeCondition
    | SopClassCondition
    | SliceThicknessCondition
    | ContrastCondition,
    Field(discriminator="kind"),
]
"""One rule condition; the ``kind`` key selects the model."""
