"""The report of a conformance run, for a person and for machines.

* :mod:`~aifi.conformance_kit.report.model` — :class:`Report` and :class:`Case` (status,
  cited section, evidence, timings) and ``report.json``;
* :mod:`~aifi.conformance_kit.report.html` — ``report.html``, one self-contained page;
* :mod:`~aifi.conformance_kit.report.junit` — JUnit XML for CI systems;
* :func:`write_report` — all three into a folder.

What it may import: the standard library and :mod:`aifi` (the version). Nothing of
the hub, gateway or products: a report is data.
"""

from aifi.conformance_kit.report.model import Case, Kind, Report, Status
from aifi.conformance_kit.report.write import write_report

__all__ = ["Case", "Kind", "Report", "Status", "write_report"]
