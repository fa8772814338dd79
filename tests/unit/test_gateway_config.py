"""The gateway's settings, configuration file and ``--pacs`` shorthand: what an operator
writes, what the gateway makes of it, and the messages a mistake gets (naming the file and
the field); the refusal to start without hub credentials outside development mode."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aifi.cli import app
from aifi.gateway.config import (
    ConfigError,
    GatewayConfig,
    load_config,
    parse_pacs,
)
from aifi.gateway.deid import Option
from aifi.gateway.ingest.allowed import address_allowed
from aifi.gateway.settings import GatewayNotStartable, GatewaySettings, check_startable
from aifi.hub.delivery.destinations import DicomwebDestination, DimseDestination

FULL = """
dimse:
  allowed_calling_ae_titles: [CT_ROOM_1, PACS_MAIN]
  allowed_addresses: [10.1.2.0/24, 127.0.0.1]
stow:
  allowed_addresses: [10.1.2.3]
  quiet_seconds: 30
pacs:
  - kind: dicomweb
    name: main
    url: https://pacs.example/dicom-web
  - kind: dimse
    name: reading-room
    host: 10.1.2.4
    port: 104
    called_ae: RR_ARCHIVE
pseudonymisation:
  options: [BASIC, RETAIN_LONGITUDINAL_MODIFIED_DATES]
retention:
  forwarded_hours: 2
  quarantined_days: 7
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_full_configuration_is_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert config.dimse.allowed_calling_ae_titles == {"CT_ROOM_1", "PACS_MAIN"}
    assert config.dimse.allowed_addresses == (
        ipaddress.ip_network("10.1.2.0/24"),
        ipaddress.ip_network("127.0.0.1/32"),
    )
    assert config.stow.quiet_seconds == 30
    assert [d.name for d in config.pacs] == ["main", "reading-room"]
    assert isinstance(config.pacs[1], DimseDestination)
    assert config.retention.forwarded_hours == 2
    assert config.retention.quarantined_days == 7
    profile = config.profile()
    assert profile.options == {Option.BASIC, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}


def test_no_file_gives_the_defaults() -> None:
    config = load_config(None)
    assert config.dimse.allowed_calling_ae_titles == frozenset()
    assert config.retention.forwarded_hours == 0  # purge as soon as the hub acknowledged
    assert config.pacs == ()
    assert Option.BASIC in config.profile().options  # the AIFI default profile


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dimse: [oops", "not valid YAML"),
        ("- a list", "expected a mapping"),
        ("dimse:\n  allowed_addresses: [10.0.0.0/8, nonsense]\n", "dimse.allowed_addresses"),
        ("dimse:\n  allowed_calling_ae_titles: [WAY_TOO_LONG_AE_TITLE]\n", "dimse."),
        ("retention:\n  forwarded_hours: -1\n", "retention.forwarded_hours"),
        ("stow:\n  quiet_secs: 3\n", "stow.quiet_secs"),
        ("pacs:\n  - kind: ftp\n    name: x\n", "pacs.0"),
        ("pseudonymisation:\n  options: [RETAIN_NOTHING]\n", "pseudonymisation.options"),
        ("pseudonymisation:\n  options: [RETAIN_UIDS]\n", "pseudonymisation"),
    ],
)
def test_bad_configuration_names_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match=r"absent\.yaml: cannot read"):
        load_config(missing)


def test_pacs_dicomweb_and_dimse() -> None:
    web = parse_pacs("http://pacs.local:8042/dicom-web/", calling_ae="AIFI-GW")
    assert web == DicomwebDestination(name="pacs", url="http://pacs.local:8042/dicom-web")
    dimse = parse_pacs("dimse://ARCHIVE@10.0.0.5:104", calling_ae="AIFI-GW")
    assert dimse == DimseDestination(
        name="pacs", host="10.0.0.5", port=104, called_ae="ARCHIVE", calling_ae="AIFI-GW"
    )


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("dimse://10.0.0.5:104", "dimse://AE_TITLE@host:port"),
        ("dimse://ARCHIVE@10.0.0.5", "dimse://AE_TITLE@host:port"),
        ("dimse://ARCHIVE@10.0.0.5:99999", "--pacs"),
        ("dimse://AN_AE_TITLE_TOO_LONG@h:104", "1-16 characters"),
        ("ftp://pacs/", "expected a DICOMweb root"),
        ("pacs.local", "expected a DICOMweb root"),
    ],
)
def test_bad_pacs_target(target: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="--pacs") as caught:
        parse_pacs(target, calling_ae="AIFI-GW")
    assert expected in str(caught.value)


def test_pacs_option_and_file_together(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    pacs = parse_pacs("http://pacs.local/dicom-web", calling_ae="AIFI-GW")
    assert [d.name for d in config.destinations(pacs)] == ["pacs", "main", "reading-room"]
    clash = load_config(
        write(tmp_path, "pacs:\n  - kind: dicomweb\n    name: pacs\n    url: http://x/dw\n")
    )
    with pytest.raises(ConfigError, match="taken by --pacs"):
        clash.destinations(pacs)


def test_a_dimse_pacs_of_the_file_is_called_with_the_gateways_ae_title(tmp_path: Path) -> None:
    """A PACS administrator allows the gateway's AE title: a DIMSE PACS in the file calls
    with it unless the entry names its own calling AE title."""
    entry = "  - kind: dimse\n    name: own\n    host: 10.1.2.5\n    port: 104\n"
    entry += "    called_ae: OWN_ARCHIVE\n    calling_ae: GW_FOR_OWN\n"
    own = FULL.replace("pseudonymisation:", entry + "pseudonymisation:")
    config = load_config(write(tmp_path, own))
    by_name = {d.name: d for d in config.destinations(None, calling_ae="HOSP-GW")}
    reading_room, named = by_name["reading-room"], by_name["own"]
    assert isinstance(reading_room, DimseDestination) and isinstance(named, DimseDestination)
    assert reading_room.calling_ae == "HOSP-GW"
    assert named.calling_ae == "GW_FOR_OWN"


def test_address_allow_list() -> None:
    networks = GatewayConfig.model_validate(
        {"dimse": {"allowed_addresses": ["10.1.0.0/16", "::1"]}}
    ).dimse.allowed_addresses
    assert address_allowed("10.1.200.3", networks)
    assert address_allowed("::ffff:10.1.0.9", networks)  # IPv4-mapped peer address
    assert address_allowed("::1", networks)
    assert not address_allowed("10.2.0.1", networks)
    assert not address_allowed("not-an-ip", networks)
    assert address_allowed("192.0.2.1", ())  # no list: any address


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIFI_GATEWAY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AIFI_GATEWAY_DIMSE_PORT", "4104")
    monkeypatch.setenv("AIFI_GATEWAY_AE_TITLE", "HOSP_GW")
    monkeypatch.setenv("AIFI_GATEWAY_HUB", "https://hub.example/")
    monkeypatch.setenv("AIFI_GATEWAY_CONFIG", str(tmp_path / "gw.yaml"))
    monkeypatch.setenv("AIFI_GATEWAY_PSEUDONYM_KEY", "a" * 64)
    monkeypatch.setenv("AIFI_DEV_MODE", "false")
    settings = GatewaySettings()
    assert settings.data_dir == tmp_path
    assert settings.dimse_port == 4104
    assert settings.ae_title == "HOSP_GW"
    assert settings.hub == "https://hub.example"
    assert settings.config_file == tmp_path / "gw.yaml"
    assert settings.dev_mode is False
    assert settings.pseudonym_key is not None
    assert "a" * 64 not in repr(settings)  # a secret never shows
    assert settings.pseudonym_key.get_secret_value() == "a" * 64
    assert settings.database_url.endswith("/gateway.db")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="AE title"):
        GatewaySettings(ae_title="")
    with pytest.raises(ValueError, match="http"):
        GatewaySettings(hub="hub.example")


def test_no_credentials_outside_development_mode(tmp_path: Path) -> None:
    with pytest.raises(GatewayNotStartable, match="--credentials"):
        check_startable(GatewaySettings(data_dir=tmp_path, dev_mode=False))
    check_startable(GatewaySettings(data_dir=tmp_path, dev_mode=True))  # allowed
    with pytest.raises(GatewayNotStartable, match="does not exist"):
        check_startable(GatewaySettings(dev_mode=False, credentials=tmp_path / "nope.json"))


def test_serve_refuses_to_start_without_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIFI_DEV_MODE", "false")
    result = CliRunner().invoke(app, ["gateway", "serve", "--data-dir", str(tmp_path / "gw")])
    assert result.exit_code == 2
    assert "refusing to start" in result.output
    assert "--credentials" in result.output
    assert not (tmp_path / "gw" / "gateway.db").exists()  # nothing was built


def test_serve_names_a_bad_config_file(tmp_path: Path) -> None:
    bad = write(tmp_path, "retention:\n  forwarded_hours: soon\n")
    result = CliRunner().invoke(
        app, ["gateway", "serve", "--data-dir", str(tmp_path / "gw"), "--config", str(bad)]
    )
    assert result.exit_code == 2
    assert f"{bad}: retention.forwarded_hours" in result.output


def test_serve_names_a_bad_pacs(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["gateway", "serve", "--data-dir", str(tmp_path / "gw"), "--pacs", "pacs:104"]
    )
    assert result.exit_code == 2
    assert "--pacs 'pacs:104'" in result.output


def _dev_settings(tmp_path: Path, **extra: Any) -> GatewaySettings:
    return GatewaySettings(
        data_dir=tmp_path / "gw", hub="http://127.0.0.1:9", dev_mode=True, workers=False, **extra
    )


def test_the_data_that_holds_identities_is_private_to_the_gateway(tmp_path: Path) -> None:
    from aifi.gateway.app import build_gateway

    gateway = build_gateway(_dev_settings(tmp_path))
    try:
        data = tmp_path / "gw"
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for name in ("gateway.db", "pseudonym.key"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    finally:
        gateway.close()


def test_a_key_others_may_read_or_a_bad_key_refuses_the_start_with_the_reason(
    tmp_path: Path,
) -> None:
    from aifi.gateway.app import build_gateway

    key = tmp_path / "gw" / "pseudonym.key"
    key.parent.mkdir()
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o644)
    with pytest.raises(GatewayNotStartable, match=r"pseudonymisation key: .*group or others"):
        build_gateway(_dev_settings(tmp_path))
    with pytest.raises(GatewayNotStartable, match=r"pseudonymisation key: .*64 hex digits"):
        build_gateway(_dev_settings(tmp_path, pseudonym_key="too short"))
