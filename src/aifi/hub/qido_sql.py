"""PLACEHOLDER: QIDO-RS queries translated to SQL — being written."""

from __future__ import annotations

from aifi.dicomweb.matching import QidoQuery, QueryResult
from aifi.hub.db import Database


def run_query(db: Database, tenant: str, query: QidoQuery) -> QueryResult:
    raise NotImplementedError
