"""``aifi bench conformance``: what the performer kit costs beyond the product's own time
(issue 18, "Performance": a full run within 60 s plus the product's processing time; the
kit's hub adds under 1 s per case).

Runs ``aifi conformance performer --run`` for each reference product, as a vendor would (a
process of its own, the product a process the kit starts), and reads the figures back from
each ``report.json``: the whole run's wall time, and per workitem case the product's time
(claim latency + processing) and the kit's (storing, routing, noticing the end).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRODUCTS = {
    "AIFI-BONEAGE": "skeletal-age",
    "AIFI-FRACTURE": "fracture-detection",
    "AIFI-IPE": "incidental-pe",
}
RUN_BUDGET_SECONDS = 60.0
CASE_BUDGET_SECONDS = 1.0


@dataclass
class ProductRun:
    product: str
    passed: bool
    wall: float
    product_seconds: float
    """Claim latency + processing, summed over the workitem cases."""
    kit_per_case: dict[str, float] = field(default_factory=dict)

    @property
    def within(self) -> bool:
        return self.wall <= RUN_BUDGET_SECONDS + self.product_seconds and all(
            value < CASE_BUDGET_SECONDS for value in self.kit_per_case.values()
        )


def run_one(product: str, name: str, folder: Path) -> ProductRun:
    report_dir = folder / product
    command = f"aifi vendors run {name} --hub {{dicomweb}} --credentials {{credentials}}"
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "aifi",
            "conformance",
            "performer",
            "--product",
            product,
            "--run",
            command,
            "--report",
            str(report_dir),
        ],
        capture_output=True,
        check=False,
        timeout=600,
    )
    wall = time.monotonic() - started
    report: dict[str, Any] = json.loads((report_dir / "report.json").read_text())
    kit: dict[str, float] = {}
    product_seconds = 0.0
    for case in report["cases"]:
        timings = case.get("timings", {})
        if "kit" in timings and case["id"] in ("timing", "negative.explicit", "cancel"):
            kit[case["id"]] = float(timings["kit"])
            product_seconds += float(timings.get("claim_latency", 0.0))
            product_seconds += float(timings.get("processing", 0.0))
    return ProductRun(product, bool(report["passed"]), wall, product_seconds, kit)


def run(products: list[str] | None = None) -> list[ProductRun]:
    chosen = products or list(PRODUCTS)
    with tempfile.TemporaryDirectory(prefix="aifi-bench-kit-") as folder:
        return [run_one(code, PRODUCTS[code], Path(folder)) for code in chosen]


def report(runs: list[ProductRun]) -> str:
    lines = [
        f"{'product':14} {'passed':6} {'run s':>7} {'product s':>9}  kit s per case "
        f"(budget {CASE_BUDGET_SECONDS:.0f} s; run budget {RUN_BUDGET_SECONDS:.0f} s + product)"
    ]
    for one in runs:
        per_case = ", ".join(f"{k} {v:.2f}" for k, v in one.kit_per_case.items())
        lines.append(
            f"{one.product:14} {one.passed!s:6} {one.wall:7.1f} {one.product_seconds:9.2f}"
            f"  {per_case}  {'within' if one.within else 'OVER'}"
        )
    return "\n".join(lines)


def to_json(runs: list[ProductRun]) -> list[dict[str, Any]]:
    return [
        {
            "product": one.product,
            "passed": one.passed,
            "wall_seconds": round(one.wall, 2),
            "product_seconds": round(one.product_seconds, 3),
            "kit_seconds_per_case": one.kit_per_case,
            "within_budget": one.within,
        }
        for one in runs
    ]
