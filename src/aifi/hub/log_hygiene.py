"""No tokens and no identifiers in the hub's logs (issue 6 "safe by default"; GDPR art. 5(1)(c)
data minimisation, NEN 7510-2 §12.4 logging).

uvicorn's access log prints each request line as sent: DICOMweb paths carry Study, Series
and SOP Instance UIDs (PS3.18 §10.4), UPS-RS paths workitem UIDs, FHIR paths resource ids,
and query strings patient names, ids and accession numbers (QIDO-RS, FHIR search). httpx
logs the URL of each outbound request (delivery to a PACS) at INFO the same way. The filter
here rewrites those URLs to their route shape before any handler sees the record::

    /dicomweb/studies/1.2.3/series/4.5.6?PatientID=X -> /dicomweb/studies/{study}/series/{series}?…
    /fhir/Patient/abc                                -> /fhir/Patient/{id}

Only literal path words of the hub's routes are kept (and a FHIR resource type); every
other segment becomes a placeholder named after the collection it belongs to, and a query
string becomes ``?…``. Headers (``Authorization`` included) are never logged by uvicorn's or
httpx's default formats, and the hub never logs a token or a client secret.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any, Literal
from urllib.parse import urlsplit

import uvicorn.config

from aifi.hub.auth.policy import RULES

_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")

KEEP = frozenset(
    segment
    for _, path in RULES
    for segment in path.split("/")
    if segment and not segment.startswith("{") and not _RESOURCE_TYPE.fullmatch(segment)
)
"""Literal path segments of the hub's routes, from the one route table
(:data:`aifi.hub.auth.policy.RULES`); FHIR resource types are kept by their own rule below."""

PLACEHOLDER = {
    "studies": "{study}",
    "series": "{series}",
    "instances": "{instance}",
    "frames": "{frames}",
    "workitems": "{workitem}",
    "subscribers": "{ae_title}",
    "results": "{workitem_uid}",
    "deliveries": "{destination}",
    "_history": "{version}",
}


def redact_path(target: str) -> str:
    """A request target (path and query, or a full URL) with identifiers replaced by
    placeholders and the query string by ``?…`` (module docstring)."""
    parts = urlsplit(target)
    segments = parts.path.split("/")
    out: list[str] = []
    for i, segment in enumerate(segments):
        previous = segments[i - 1] if i > 0 else ""
        if segment == "" or segment in KEEP:
            out.append(segment)
        elif previous == "bulkdata":
            out.append("{path}")
            break
        elif previous == "fhir" and _RESOURCE_TYPE.fullmatch(segment):
            out.append(segment)  # a resource type names no one
        elif previous == "fhir" or (i >= 2 and segments[i - 2] == "fhir"):
            out.append("{id}")
        else:
            out.append(PLACEHOLDER.get(previous, "{…}"))
    path = "/".join(out)
    origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
    return origin + path + ("?…" if parts.query else "")


class RedactingFilter(logging.Filter):
    """For ``uvicorn.access`` (args: client, method, path, HTTP version, status) and
    ``httpx`` (args: method, URL, …): the path or URL argument redacted with
    :func:`redact_path`. Always lets the record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            index = 2 if record.name.startswith("uvicorn") else 1
            if len(args) > index:
                redacted = list(args)
                redacted[index] = redact_path(str(args[index]))
                record.args = tuple(redacted)
        return True


_FILTER = RedactingFilter()
REDACTED_LOGGERS = ("uvicorn.access", "httpx")


def install() -> None:
    """Put the filter on the ``uvicorn.access`` and ``httpx`` loggers of this process
    (idempotent)."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def uvicorn_log_config(
    aifi_level: str | None = None, log_format: Literal["text", "json"] = "text"
) -> dict[str, Any]:
    """uvicorn's logging configuration with the filter on ``uvicorn.access`` and ``httpx``,
    for ``uvicorn.run(log_config=…)``: each worker process configures it itself.

    ``aifi_level`` (``aifi serve --log-level``): the hub's own ``aifi.*`` loggers write at
    that level to standard error, named (``INFO:     aifi.hub.orchestration.task_manager: …``);
    without
    it they had no handler, and nothing under WARNING ever showed. Their records still
    propagate (a handler on the root logger sees them too)."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["aifi_redact"] = {"()": "aifi.hub.log_hygiene.RedactingFilter"}
    config["loggers"]["uvicorn.access"]["filters"] = ["aifi_redact"]
    config["loggers"]["httpx"] = {"filters": ["aifi_redact"]}
    if aifi_level is not None:
        config["formatters"]["aifi"] = {
            "()": "uvicorn.logging.DefaultFormatter",
            "fmt": "%(levelprefix)s %(name)s: %(message)s",
            "use_colors": None,
        }
        config["handlers"]["aifi"] = {
            "formatter": "aifi",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
        }
        config["loggers"]["aifi"] = {"handlers": ["aifi"], "level": aifi_level.upper()}
    if log_format == "json":
        _as_json_lines(config, aifi_level)
    return config


def _as_json_lines(config: dict[str, Any], aifi_level: str | None) -> None:
    """``log_format="json"`` (:mod:`aifi.hub.json_logs`): every handler writes JSON lines;
    uvicorn's access log is off (the app's :class:`~aifi.hub.json_logs.RequestLog` writes
    access lines with the route template instead); the root logger gets the JSON handler,
    at WARNING when the hub's own loggers have theirs (``aifi_level``), so that no library
    falls back to a plain-text line."""
    json_formatter = {"()": "aifi.hub.json_logs.JsonFormatter"}
    for name in list(config["formatters"]):
        config["formatters"][name] = json_formatter
    config["loggers"]["uvicorn.access"].update(handlers=[], propagate=False)
    root: dict[str, Any] = {"handlers": ["default"]}
    if aifi_level is not None:
        config["loggers"]["aifi"]["propagate"] = False
        root["level"] = "WARNING"
    config["root"] = root


__all__ = ["RedactingFilter", "install", "redact_path", "uvicorn_log_config"]
