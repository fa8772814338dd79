"""The foundation: package layout, settings, migrations on both databases, the repository."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aifi.cli import app as cli_app
from aifi.dicomweb.store import StoreStatus
from aifi.hub.persistence.database import Database
from aifi.hub.settings import Settings
from aifi.hub.store.repository import SqlDicomStore
from tests.support.dicom import ingest, make_ct, to_bytes

SUBPACKAGES = ["dicomweb", "ihe_profiles", "fhir", "vendors", "hub", "gateway", "conformance"]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackages_exist_and_say_what_they_are_for(name: str) -> None:
    module = importlib.import_module(f"aifi.{name}")
    assert module.__doc__ and len(module.__doc__.split()) > 5


def test_cli_help_on_every_verb() -> None:
    runner = CliRunner()
    result = runner.invoke(cli_app, ["--help"])
    assert result.exit_code == 0
    for verb in ["serve", "demo", "bench", "version"]:
        assert verb in result.output
        sub = runner.invoke(cli_app, [verb, "--help"])
        assert sub.exit_code == 0, sub.output


def test_invalid_tenant_is_refused() -> None:
    with pytest.raises(ValueError, match="tenant"):
        Settings(default_tenant="../etc")


def test_repository_stores_atomically_and_applies_duplicate_policy(
    tmp_path: Path, database_url: str | None
) -> None:
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    db = Database(settings.resolved_database_url)
    db.migrate()
    db.migrate()  # idempotent
    store = SqlDicomStore(db, settings.dicom_dir)
    store.ensure_tenant("default")
    store.ensure_tenant("other")
    ds = make_ct()
    data = to_bytes(ds)
    [first] = ingest(store, [data])
    assert first.status is StoreStatus.STORED
    [again] = ingest(store, [data])
    assert again.status is StoreStatus.ALREADY_STORED
    changed = make_ct(
        sop_uid=ds.SOPInstanceUID,
        study_uid=ds.StudyInstanceUID,
        series_uid=ds.SeriesInstanceUID,
        patient_name="Other^Name",
    )
    [conflict] = ingest(store, [changed])
    assert conflict.status is StoreStatus.CONFLICT
    found = store.find_instances("default", ds.StudyInstanceUID)
    assert len(found) == 1
    assert found[0].path.read_bytes() == data  # the first instance was kept, byte for byte
    assert store.find_instances("other", ds.StudyInstanceUID) == []  # tenant isolation
    assert not list(store.staging_dir().iterdir())  # staged files consumed
    db.dispose()


def test_migrations_create_exactly_the_models(tmp_path: Path, database_url: str | None) -> None:
    """The Alembic migrations and the SQLModel tables describe the same schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    import aifi.hub.persistence.tables  # noqa: F401

    settings = Settings(data_dir=tmp_path, database_url=database_url)
    db = Database(settings.resolved_database_url)
    db.migrate()
    with db.writer.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    db.dispose()
    assert diff == []
