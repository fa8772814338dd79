"""Shared fixtures: settings on a temporary data folder, the real app, a real uvicorn server,
and the database backends (SQLite always; PostgreSQL when it answers at 127.0.0.1:5432)."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from aifi.dicomweb.dicomjson import configure_pydicom
from aifi.hub.app import create_app
from aifi.hub.settings import Settings
from tests.support.dciodvfy import dciodvfy  # noqa: F401 - a fixture for every test module
from tests.support.orthanc import orthanc  # noqa: F401 - a fixture for every test module
from tests.support.wait import wait_until

configure_pydicom()

# Tests that are not about authentication run the hub in development mode (every request is
# the default tenant with every right); the OAuth2 tests (tests/contract/test_auth*.py) build
# their hubs with auth="builtin" or "external" explicitly. Set in the environment so that
# every Settings() a test builds, and every hub process a test starts, gets it.
os.environ.setdefault("AIFI_AUTH", "off")
os.environ.setdefault("AIFI_DEV_MODE", "true")

PG_HOST = os.environ.get("AIFI_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("AIFI_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("AIFI_TEST_PG_USER", "postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    try:
        import psycopg

        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3
        ):
            return None
    except Exception as exc:  # any failure means: skip, and say why
        return f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} as {PG_USER}: {exc}"


_ENDED_DATABASES: set[str] = set()
"""Test databases whose scope has ended (dropped, or about to be)."""


def _quiet_for_ended_databases() -> None:
    """A connection to a test database whose scope has ended, garbage-collected open later,
    is logged, not raised: psycopg's ResourceWarning would otherwise fail whatever unrelated
    test runs when the collector gets to it (seen in CI: a thread of the previous module's
    chain finished after its database was dropped). Connections to live databases still
    warn, so a leak inside a test still fails that test."""
    import psycopg

    base: Any = next(cls for cls in psycopg.Connection.__mro__ if "__del__" in vars(cls))
    original = base.__del__

    def __del__(self: Any, *args: Any) -> None:
        with contextlib.suppress(Exception):
            if not self.closed and self.pgconn.db.decode() in _ENDED_DATABASES:
                logging.getLogger("tests").warning(
                    "a connection to the ended test database %s was collected open",
                    self.pgconn.db.decode(),
                )
                return
        original(self, *args)

    base.__del__ = __del__


_quiet_for_ended_databases()


def _close_left_open(database: str) -> None:
    """Close the connections to ``database`` still open when its test scope ends, and log
    them. A thread that outlives its test by a moment (a request handler, the audit trail's
    writer, a background round) can leave one checked out of a pool already disposed; left
    to the garbage collector, psycopg reports it ("deleted while still open") in whatever
    test runs then, which failed unrelated tests at random."""
    import psycopg

    left = []
    for candidate in gc.get_objects():  # reachable or not yet collected
        # type(), not isinstance(): a dead weak proxy among the objects raises on any look
        if not issubclass(type(candidate), psycopg.Connection):
            continue
        with contextlib.suppress(Exception):
            if not candidate.closed and candidate.info.dbname == database:
                left.append(candidate)
    for connection in left:
        with contextlib.suppress(Exception):
            connection.close()
    if left:
        logging.getLogger("tests").warning(
            "%d connection(s) to %s were still open at the end of the test", len(left), database
        )


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test scope; dropped afterwards."""
    import psycopg

    name = f"aifi_test_{uuid.uuid4().hex[:12]}"
    admin = dict(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        _ENDED_DATABASES.add(name)
        _close_left_open(name)
        with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
            # Bounded: once in CI the drop waited out the test's whole timeout. A database
            # left behind is harmless (fresh names); a hung teardown fails the suite.
            conn.execute("SET statement_timeout = '30s'")
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.errors.QueryCanceled:
                logging.getLogger("tests").warning("database %s not dropped within 30 s", name)


@contextlib.contextmanager
def database_for(backend: str) -> Iterator[str | None]:
    """``None`` (SQLite, the embedded default) for ``"sqlite"``; a fresh PostgreSQL database
    URL for ``"postgresql"``, skipped with the reason when PostgreSQL does not answer — and
    failed under CI, which must run the PostgreSQL tests."""
    if backend == "sqlite":
        yield None
        return
    reason = postgres_available()
    if reason:
        if os.environ.get("CI") and not os.environ.get("AIFI_ALLOW_PG_SKIP"):
            pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
        pytest.skip(reason)
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """Run the test once on SQLite (None = embedded default) and once on PostgreSQL."""
    with database_for(request.param) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """SQLite only, for tests that are not about the database."""
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    application = create_app(settings)
    yield application
    application.state.hub.close()


@dataclass
class LiveServer:
    url: str
    """Base URL, e.g. http://127.0.0.1:54321"""
    app: FastAPI

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicomweb"


@contextlib.contextmanager
def run_live_server(application: FastAPI, *, lifespan: bool = False) -> Iterator[LiveServer]:
    """A real uvicorn server in a thread, on a free loopback port. Without ``lifespan`` the
    app's background work (the AIW-I Task Manager loop) does not run, so tests that are
    not about it see no activity of their own."""
    port = free_port()
    config = uvicorn.Config(
        application,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on" if lifespan else "off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            httpx.get(url + "/healthz", timeout=1)
        except httpx.TransportError:
            return False
        return True

    wait_until(answers, 20, "uvicorn to start")
    try:
        yield LiveServer(url=url, app=application)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[LiveServer]:
    with run_live_server(app) as server:
        yield server


@contextlib.contextmanager
def running_hub(settings: Settings, *, lifespan: bool = False) -> Iterator[LiveServer]:
    """The app for ``settings`` under a real uvicorn server; closed after it stopped."""
    application = create_app(settings)
    try:
        with run_live_server(application, lifespan=lifespan) as server:
            yield server
    finally:
        application.state.hub.close()


@contextlib.contextmanager
def hub_for_backend(backend: str, data_dir: Path) -> Iterator[LiveServer]:
    """A live hub on SQLite or a fresh PostgreSQL database (see :func:`database_for`)."""
    with (
        database_for(backend) as url,
        running_hub(Settings(data_dir=data_dir, database_url=url)) as server,
    ):
        yield server


@pytest.fixture
def sqlite_live_server(sqlite_settings: Settings) -> Iterator[LiveServer]:
    with running_hub(sqlite_settings) as server:
        yield server
