"""Declarative, explainable routing rules for the IHE AIW-I Task Manager.

The Task Manager (IHE RAD TF-1 AIW-I) decides, for each complete study, which AI products
get a workitem (RAD-80 Create UPS Workitem). That decision is data, not code: a
:class:`RulesConfig` (YAML, see ``default_rules.yaml``) lists the :class:`Product`\\ s with
the conditions (``when``) a study must meet, and which products each tenant (hospital) uses.

:func:`evaluate` turns the stored instances' DICOM JSON (PS3.18 Annex F), summarised as
:class:`StudyFacts`, into one :class:`Decision` per product, each with the :class:`Check`\\ s
that led to it and the values seen, so :func:`explain` can say *why* a study was or was not
sent — headers from other hospitals are the main cause of missed studies, and an answer
like "BodyPartExamined 'THORAX' -> CHEST; no series shows HAND" makes the fix obvious.

Conditions are judged per series (modality, body part, description, SOP class, slice
thickness, contrast) or per study (age). A study matches a product when at least one series
meets every series-level condition and every study-level condition holds; the series that
do become the workitem's input (``inputs: matching_series``), or the whole study.
Header values are read and normalised by :mod:`aifi.ihe_profiles.normalise` (which defines
:class:`StudyFacts`, re-exported here).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aifi.errors import NotFound
from aifi.ihe_profiles.conditions import Condition, SopClassCondition
from aifi.ihe_profiles.normalise import (
    InstanceRef,
    SeriesFacts,
    StudyFacts,
    normalise_modality,
)

__all__ = [
    "Check",
    "Condition",
    "Decision",
    "InstanceRef",
    "Priors",
    "Product",
    "RulesConfig",
    "SeriesFacts",
    "StudyFacts",
    "evaluate",
    "explain",
    "load_rules",
]

# --- Configuration ------------------------------------------------------------------------

_CODE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class Priors(BaseModel):
    """The earlier studies of the same patient a comparison product needs (issue 17): its
    workitem is created with Input Readiness State INCOMPLETE (PS3.4 CC.2.5.1.3) while the
    hospital's gateway looks for them, and runs without them after ``wait_seconds``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: Annotated[int, Field(ge=1)] = 1
    """How many earlier studies, newest first."""
    same_modality: bool = True
    same_body_part: bool = True
    within_days: Annotated[int, Field(ge=1)] = 1825
    """How far back before the current study."""
    wait_seconds: Annotated[float, Field(gt=0)] = 300
    """How long the workitem waits for them (from routing), then is READY without."""

    def describe(self) -> str:
        what = [
            s
            for s, on in (
                ("same modality", self.same_modality),
                ("same body part", self.same_body_part),
            )
            if on
        ]
        return (
            f"needs {self.count} prior stud{'y' if self.count == 1 else 'ies'}"
            f"{' (' + ', '.join(what) + ')' if what else ''} within {self.within_days} days; "
            f"waits {self.wait_seconds:g} s for them, then runs without"
        )


class Product(BaseModel):
    """An AI product the Task Manager can schedule, and when (AIW-I workitem template).

    ``code``/``scheme``/``name`` become the UPS Scheduled Workitem Code Sequence
    (0040,4018) item (Code Value and Coding Scheme Designator are SH: 16 characters;
    Code Meaning LO: 64); ``priority`` the Scheduled Procedure Step Priority (0074,1200).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: Annotated[str, Field(pattern=_CODE, max_length=16)]
    scheme: Annotated[str, Field(pattern=_CODE, max_length=16)] = "99AIFI"
    name: Annotated[str, Field(min_length=1, max_length=64)]
    vendor: Annotated[str, Field(min_length=1)]
    version: Annotated[str, Field(min_length=1)]
    mode: Literal["pull", "push"]
    push_url: str | None = None
    supervision: Literal["supervised", "autonomous"]
    norm_turnaround_minutes: Annotated[int, Field(gt=0)]
    priority: Literal["HIGH", "MEDIUM", "LOW"]
    claim_timeout_minutes: Annotated[int, Field(gt=0)]
    run_timeout_minutes: Annotated[int, Field(gt=0)]
    max_attempts: Annotated[int, Field(ge=1)]
    when: list[Condition]
    inputs: Literal["matching_series", "study"] = "matching_series"
    urgent_findings: bool = False
    """A positive finding of this product is urgent (IHE AIR results on the hub: an
    "urgent-finding" notification when its result is positive)."""
    on_request: bool = False
    """Only when asked for (an EPD's FHIR Task naming the study and this product): the Task
    Manager does not schedule it by itself for every matching study."""
    model_name: str | None = None
    """Manufacturer's Model Name in the Contributing Equipment (IHE AIR algorithm
    identification) of this product's results, when it is not the product's ``name``:
    tells the hub which workitem a result belongs to when several are IN PROGRESS for
    one study."""
    priors: Priors | None = None
    """Earlier studies of the patient this product compares with (:class:`Priors`)."""

    @model_validator(mode="after")
    def _push_url(self) -> Product:
        if self.mode == "push" and not self.push_url:
            raise ValueError(f"product {self.code}: mode 'push' needs a push_url")
        if self.mode == "pull" and self.push_url:
            raise ValueError(f"product {self.code}: push_url is only used with mode 'push'")
        return self


DEFAULT_QUIET_PERIOD_SECONDS: dict[str, float] = {
    "DX": 10.0,
    "CR": 10.0,
    "CT": 30.0,
    "MR": 30.0,
    "default": 30.0,
}
"""Seconds without a new instance before a study counts as complete, per modality: an X-ray
arrives in a few images within seconds; a CT or MR in many, in bursts."""


class RulesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    products: list[Product]
    tenants: dict[str, list[str]]
    quiet_period_seconds: dict[str, float] = dict(DEFAULT_QUIET_PERIOD_SECONDS)

    @field_validator("quiet_period_seconds")
    @classmethod
    def _merge_defaults(cls, given: dict[str, float]) -> dict[str, float]:
        """Given values override the defaults; modality names are normalised."""
        merged = dict(DEFAULT_QUIET_PERIOD_SECONDS)
        for key, seconds in given.items():
            if seconds < 0:
                raise ValueError(f"quiet period for {key!r} is negative: {seconds}")
            merged["default" if key == "default" else normalise_modality(key)] = seconds
        return merged

    @model_validator(mode="after")
    def _references(self) -> RulesConfig:
        codes = [p.code for p in self.products]
        duplicates = sorted({c for c in codes if codes.count(c) > 1})
        if duplicates:
            raise ValueError(f"duplicate product codes: {', '.join(duplicates)}")
        for tenant, used in self.tenants.items():
            unknown = [c for c in used if c not in codes]
            if unknown:
                raise ValueError(
                    f"tenant {tenant!r} uses unknown products {', '.join(unknown)}; "
                    f"defined: {', '.join(codes) or 'none'}"
                )
        return self

    def quiet_period(self, modalities: Iterable[str]) -> float:
        """The longest quiet period of the study's modalities ("default" for unlisted ones
        and for none)."""
        table = self.quiet_period_seconds
        default = table["default"]
        return max((table.get(normalise_modality(m), default) for m in modalities), default=default)

    def product(self, code: str) -> Product:
        for product in self.products:
            if product.code == code:
                return product
        raise NotFound(f"no product {code!r} in the routing rules")

    def products_for(self, tenant: str) -> list[Product]:
        if tenant not in self.tenants:
            raise NotFound(f"tenant {tenant!r} has no routing rules")
        return [self.product(code) for code in self.tenants[tenant]]


def load_rules(path: Path | None = None) -> RulesConfig:
    """Read routing rules from YAML; ``None`` reads the packaged ``default_rules.yaml``.

    Raises ValueError (naming the file) for invalid YAML or rules.
    """
    if path is None:
        source = "default_rules.yaml (packaged)"
        text = (
            importlib.resources.files(__package__)
            .joinpath("default_rules.yaml")
            .read_text(encoding="utf-8")
        )
    else:
        source, text = str(path), path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping with 'products' and 'tenants'")
    try:
        return RulesConfig.model_validate(data)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ValueError(f"{source}: invalid routing rules: {exc}") from exc


# --- Evaluation and explanation ----------------------------------------------------------


@dataclass(frozen=True)
class Check:
    condition: str
    """Short human description: ``"body part in HAND"``."""
    passed: bool
    detail: str
    """Why: the values seen, one line per series for series-level conditions."""


@dataclass(frozen=True)
class Decision:
    product: Product
    matched: bool
    checks: tuple[Check, ...]
    input_series: tuple[str, ...]
    """Series Instance UIDs that become the workitem's input; empty when not matched."""
    input_instances: tuple[tuple[str, str, str], ...]
    """(Series Instance UID, SOP Instance UID, SOP Class UID) of the input instances."""


def evaluate(config: RulesConfig, tenant: str, facts: StudyFacts) -> list[Decision]:
    """One :class:`Decision` per product the tenant uses, in the tenant's order.

    Raises :class:`~aifi.errors.NotFound` for a tenant without rules.
    """
    return [_decide(product, facts) for product in config.products_for(tenant)]


def _decide(product: Product, facts: StudyFacts) -> Decision:
    checks: list[Check] = []
    candidates = {s.series_instance_uid for s in facts.series}
    series_conditions = [c for c in product.when if c.scope == "series"]
    for condition in series_conditions:
        lines, passing = [], set()
        for series in facts.series:
            passed, why = condition.test_series(series, facts)
            lines.append(f"{'+' if passed else '-'} {series.label}: {why}")
            if passed:
                passing.add(series.series_instance_uid)
        candidates &= passing
        checks.append(Check(condition.describe(), bool(passing), "\n".join(lines)))
    if len(series_conditions) > 1 and all(c.passed for c in checks) and not candidates:
        checks.append(
            Check(
                "one series meets every series condition",
                False,
                "each condition is met, but by different series",
            )
        )
    for condition in product.when:
        if condition.scope == "study":
            checks.append(Check(condition.describe(), *condition.test_study(facts)))
    matched = bool(candidates) and all(c.passed for c in checks)
    if not matched:
        return Decision(product, False, tuple(checks), (), ())
    chosen = [
        s for s in facts.series if product.inputs == "study" or s.series_instance_uid in candidates
    ]
    classes = {u for c in product.when if isinstance(c, SopClassCondition) for u in c.uids}
    instances = tuple(
        (s.series_instance_uid, i.sop_instance_uid, i.sop_class_uid)
        for s in chosen
        for i in s.instances
        if product.inputs == "study" or not classes or i.sop_class_uid in classes
    )
    return Decision(
        product, True, tuple(checks), tuple(s.series_instance_uid for s in chosen), instances
    )


def explain(decisions: Sequence[Decision]) -> str:
    """A terminal-readable account: per product MATCH / no match, then every check."""
    blocks = []
    for decision in decisions:
        product = decision.product
        verdict = "MATCH" if decision.matched else "no match"
        lines = [f"{product.code} ({product.name}; {product.vendor} {product.version}): {verdict}"]
        for check in decision.checks:
            lines.append(f"  {'PASS' if check.passed else 'FAIL'}  {check.condition}")
            lines += [f"        {line}" for line in check.detail.splitlines()]
        if decision.matched:
            lines.append(
                f"  inputs: {len(decision.input_series)} series, "
                f"{len(decision.input_instances)} instances: {', '.join(decision.input_series)}"
            )
            if product.priors is not None:
                lines.append(f"  priors: {product.priors.describe()}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "no products configured for this tenant"
