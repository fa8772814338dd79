"""``report.html``: the report as one page a person reads — the verdict and counts at the
top, the failing required cases listed, then every case with its status, the section it
cites, the message, timings and evidence.

Self-contained: the styles are inline and nothing is loaded from elsewhere (no scripts, no
fonts, no images), so it opens offline and can be mailed. Every value is escaped
(:func:`html.escape`): evidence holds what the target answered, which is not trusted.
Colours carry no meaning alone: each status is also written as a word (WCAG 1.4.1).
"""

from __future__ import annotations

import json
from html import escape

from aifi.conformance_kit.report.model import Case, Report, Status

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;
color:#1b1b1b;line-height:1.45}
h1{font-size:1.5rem;margin-bottom:.25rem}
.verdict{font-size:1.25rem;font-weight:700;padding:.75rem 1rem;border-radius:.4rem}
.verdict.pass{background:#dff3e2;color:#0b4d17}.verdict.fail{background:#fbe0e0;color:#7a0b0b}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
th,td{border:1px solid #c8c8c8;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f1f1f1}
.status{font-weight:700;text-transform:uppercase;white-space:nowrap}
.pass .status{color:#0b5d1e}.fail .status{color:#9b0d0d}.warn .status{color:#7a4d00}
.skip .status{color:#4a4a4a}
section.case{border-left:.4rem solid #c8c8c8;padding:.25rem 1rem;margin:1rem 0}
section.case.pass{border-color:#2e8540}section.case.fail{border-color:#b31b1b}
section.case.warn{border-color:#c27c00}
pre{background:#f6f6f6;padding:.5rem;overflow-x:auto;font-size:.85rem;white-space:pre-wrap}
"""


def _cell(value: object) -> str:
    return escape(str(value))


def _case_row(case: Case) -> str:
    required = "required" if case.required else "optional"
    return (
        f'<tr class="{case.status.value}"><td><a href="#{_cell(case.id)}">{_cell(case.id)}</a>'
        f'</td><td>{_cell(case.title)}</td><td class="status">{case.status.value}</td>'
        f"<td>{required}</td><td>{_cell(case.message)}</td></tr>"
    )


def _case_section(case: Case) -> str:
    parts = [
        f'<section class="case {case.status.value}" id="{_cell(case.id)}">',
        f'<h3>{_cell(case.title)} <span class="status">{case.status.value}</span></h3>',
        f"<p><code>{_cell(case.id)}</code> — {'required' if case.required else 'optional'}"
        f"; checks {_cell(', '.join(case.cites))}; took {case.seconds:.2f} s</p>",
    ]
    if case.message:
        parts.append(f"<p>{_cell(case.message)}</p>")
    if case.timings:
        rows = "".join(
            f"<tr><th scope='row'>{_cell(name)}</th><td>{value:.3f} s</td></tr>"
            for name, value in case.timings.items()
        )
        parts.append(f"<table><caption>Timings</caption>{rows}</table>")
    if case.evidence:
        text = json.dumps(case.evidence, indent=2, default=str)
        parts.append(f"<details><summary>Evidence</summary><pre>{_cell(text)}</pre></details>")
    parts.append("</section>")
    return "\n".join(parts)


def render_html(report: Report) -> str:
    verdict = "pass" if report.passed else "fail"
    counts = report.counts
    title = f"aifi conformance {report.kind.value}: {'PASSED' if report.passed else 'FAILED'}"
    target = "".join(
        f"<tr><th scope='row'>{_cell(key)}</th><td>{_cell(value)}</td></tr>"
        for key, value in report.target.items()
    )
    failing = report.failing()
    failing_html = (
        "<h2>Required cases not shown</h2><ul>"
        + "".join(
            f'<li><a href="#{_cell(case.id)}">{_cell(case.title)}</a> ({case.status.value}): '
            f"{_cell(case.message)}</li>"
            for case in failing
        )
        + "</ul>"
        if failing
        else ""
    )
    summary = ", ".join(f"{counts[status.value]} {status.value}" for status in Status)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_cell(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<main>
<h1>aifi conformance {_cell(report.kind.value)}</h1>
<p class="verdict {verdict}" id="summary" role="status">{_cell(title)} — {_cell(summary)}</p>
<table><caption>Target and run</caption>{target}
<tr><th scope='row'>tool</th><td>{_cell(report.tool)} {_cell(report.tool_version)}</td></tr>
<tr><th scope='row'>started</th><td>{_cell(report.started)}</td></tr>
<tr><th scope='row'>finished</th><td>{_cell(report.finished)}</td></tr></table>
{failing_html}
<h2>Cases</h2>
<table id="cases"><thead><tr><th scope="col">Case</th><th scope="col">What it checks</th>
<th scope="col">Status</th><th scope="col">Required</th><th scope="col">Finding</th></tr></thead>
<tbody>{"".join(_case_row(case) for case in report.cases)}</tbody></table>
{"".join(_case_section(case) for case in report.cases)}
</main>
</body>
</html>
"""
