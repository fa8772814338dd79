"""What every WADO-RS route needs (PS3.18 §10.4): the target resource paths, the checked
UIDs, the request's context (store, service root URL, tenant, acceptable media types) as a
FastAPI dependency, and a stored instance's frame reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from aifi.dicomweb.deps import ConfigDep, StoreDep
from aifi.dicomweb.frames import FrameReader
from aifi.dicomweb.media import MediaType, parse_accept
from aifi.dicomweb.store import DicomStore, StoredInstance
from aifi.errors import HubError, InvalidRequest, NotFound
from aifi.principal import PrincipalDep

MULTIPART = "multipart/related"

STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"
FRAMES = INSTANCE + "/frames/{frames}"

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


# -- request helpers ----------------------------------------------------------------------


def check_uids(*values: str | None) -> None:
    """400 unless every UID given (None: not given) is one (PS3.5 §9.1)."""
    for value in values:
        if value is not None and not (len(value) <= 64 and _UID.fullmatch(value)):
            raise InvalidRequest(f"Not a valid UID: {value[:80]!r}")


def level_name(series: str | None, instance: str | None) -> str:
    """The level a request addresses, for messages."""
    return "instance" if instance else "series" if series else "study"


@dataclass(frozen=True, slots=True)
class RetrieveContext:
    """What every route needs: the request, the store, the service root URL, the tenant."""

    request: Request
    store: DicomStore
    service: str
    tenant: str

    def accept(self) -> list[MediaType]:
        """The ``accept`` query parameter (PS3.18 §8.3.3.1) if given, else the Accept
        header (§8.7.5), most preferred first."""
        query = self.request.query_params.getlist("accept")
        header = ", ".join(query) if query else ", ".join(self.request.headers.getlist("accept"))
        return parse_accept(header)

    def find(
        self, study: str, series: str | None = None, instance: str | None = None
    ) -> list[StoredInstance]:
        """The stored instances addressed (one database query); 404 when none."""
        check_uids(study, series, instance)
        found = self.store.find_instances(self.tenant, study, series, instance)
        if not found:
            raise NotFound(f"No such {level_name(series, instance)}")
        return found

    def url(self, inst: StoredInstance) -> str:
        return (
            f"{self.service}/studies/{inst.study_instance_uid}/series/"
            f"{inst.series_instance_uid}/instances/{inst.sop_instance_uid}"
        )


async def retrieve_context(
    request: Request, store: StoreDep, config: ConfigDep, principal: PrincipalDep
) -> RetrieveContext:
    return RetrieveContext(request, store, config.service_url(request), principal.tenant)


Ctx = Annotated[RetrieveContext, Depends(retrieve_context)]


def with_syntax(media: str, syntax: str) -> str:
    """A media type with its ``transfer-syntax`` parameter."""
    return f"{media}; transfer-syntax={syntax}"


def open_reader(inst: StoredInstance) -> FrameReader:
    """The frames of a stored instance; a missing file is the hub's error (500)."""
    try:
        return FrameReader(inst.path)
    except OSError as exc:
        raise HubError(f"Stored file of instance {inst.sop_instance_uid} is missing") from exc
