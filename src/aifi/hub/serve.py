"""Running the hub under uvicorn, from the CLI or a test/benchmark harness."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from aifi.dicomweb.dicomjson import configure_pydicom
from aifi.hub.settings import Settings


def build_settings(*, data_dir: Path | None = None, database_url: str | None = None) -> Settings:
    """Settings from the environment (``AIFI_*``), overridden by explicit CLI options."""
    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database_url is not None:
        overrides["database_url"] = database_url
    return Settings(**overrides)  # type: ignore[arg-type]


def _freeze_startup_objects() -> None:
    """Keep the objects that live as long as the process (modules, pydicom's data
    dictionaries, the app) out of the cyclic garbage collector's full collections: with
    them, one took ~100 ms, a pause every few dozen STOW-RS requests."""
    gc.collect()
    gc.freeze()


def app_from_environment() -> FastAPI:
    """uvicorn factory (``aifi.hub.serve:app_from_environment``) for multi-worker runs."""
    from aifi.hub.app import create_app

    configure_pydicom()
    app = create_app(Settings())
    _freeze_startup_objects()
    return app


def run_server(
    settings: Settings, *, host: str, port: int, workers: int = 1, log_level: str = "info"
) -> None:
    configure_pydicom()
    if workers > 1:
        os.environ["AIFI_DATA_DIR"] = str(settings.data_dir)
        if settings.database_url:
            os.environ["AIFI_DATABASE_URL"] = settings.database_url
        uvicorn.run(
            "aifi.hub.serve:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
        )
        return
    from aifi.hub.app import create_app

    app = create_app(settings)
    _freeze_startup_objects()
    uvicorn.run(app, host=host, port=port, log_level=log_level)
