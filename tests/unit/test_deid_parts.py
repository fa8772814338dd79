"""The pieces under the pseudonymiser: the key file, the profile, Table E.1-1 as data, the
keyed pseudonyms and the clean actions on values."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from importlib import resources
from pathlib import Path

import pytest
from pydantic import ValidationError

from aifi.gateway.deid import (
    TABLE_EDITION,
    NotReidentifiable,
    Option,
    Profile,
    Quarantine,
    SafePrivate,
    identity,
    load_or_create_key,
    table,
)
from aifi.gateway.deid.clean import (
    clean_text,
    forbidden_tokens,
    parse_da,
    patient_age,
    shift_da,
    shift_dt,
)
from aifi.gateway.deid.keyed import Keyed
from aifi.gateway.deid.table import Action, Row, resolve, rows

# -- the key -----------------------------------------------------------------------------


def test_a_new_key_file_is_32_random_bytes_readable_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "pseudonym.key"
    old = os.umask(0)  # even with a permissive umask the file is created 0600
    try:
        key = load_or_create_key(path)
    finally:
        os.umask(old)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == key.hex()
    assert load_or_create_key(path) == key
    assert load_or_create_key(tmp_path / "other.key") != key


def test_a_given_key_wins(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    load_or_create_key(path)
    assert load_or_create_key(path, "ab" * 32) == bytes.fromhex("ab" * 32)
    secret = "a long passphrase of the hospital, 40 chars"
    assert load_or_create_key(path, secret) == secret.encode()
    assert load_or_create_key(tmp_path / "never.key", "cd" * 32) == bytes.fromhex("cd" * 32)
    assert not (tmp_path / "never.key").exists()


def test_a_short_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        load_or_create_key(tmp_path / "k", "too short")
    path = tmp_path / "short.key"
    path.write_text("abc\n")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="64 hex digits"):
        load_or_create_key(path)


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    load_or_create_key(path)
    for mode in (0o640, 0o604, 0o610):
        path.chmod(mode)
        with pytest.raises(PermissionError, match="group or others"):
            load_or_create_key(path)


def test_keyed_refuses_a_short_key() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Keyed(b"short")
    Keyed(b"x" * 16)


# -- keyed pseudonyms ----------------------------------------------------------------------


def test_uid_pseudonyms_carry_a_keyed_check() -> None:
    keyed = Keyed(b"k" * 32)
    pseudo = keyed.uid("1.2.3.4")
    assert pseudo == keyed.uid("1.2.3.4") == Keyed(b"k" * 32).uid("1.2.3.4")
    assert pseudo != keyed.uid("1.2.3.5")
    assert keyed.is_pseudonym_uid(pseudo)
    assert not Keyed(b"j" * 32).is_pseudonym_uid(pseudo)
    for other in (
        "1.2.3.4",
        "2.25.1",
        "2.25.x",
        "2.25." + str(2**128),
        "2.25." + "9" * 40,
        pseudo[:-1] + ("1" if pseudo[-1] != "1" else "2"),
    ):
        assert not keyed.is_pseudonym_uid(other), other


def test_patient_and_accession_pseudonyms() -> None:
    keyed = Keyed(b"k" * 32)
    patient = keyed.patient("AIFI", "id\x00MRN-1\x00")
    assert patient.startswith("AIFI") and len(patient) == 20
    assert patient[4:].isalnum() and patient[4:].isupper()
    assert keyed.patient("", "id\x00MRN-1\x00") == patient[4:]
    accession = keyed.accession("ACC-1")
    assert len(accession) == 16 and accession != keyed.accession("ACC-2")
    assert keyed.uid("ACC-1") != accession


def test_date_offsets_are_spread_over_the_whole_range() -> None:
    keyed = Keyed(b"k" * 32)
    offsets = {keyed.date_offset(f"patient {n}", -30, -1) for n in range(2000)}
    assert offsets == set(range(-30, 0))
    assert keyed.date_offset("p", 5, 5) == 5


# -- the profile -------------------------------------------------------------------------


def test_the_default_profile_is_the_aifi_one() -> None:
    profile = Profile()
    assert profile.options == {
        Option.BASIC,
        Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
        Option.RETAIN_PATIENT_CHARACTERISTICS,
        Option.CLEAN_DESCRIPTORS,
    }
    assert profile.pseudonym_prefix == "AIFI"


def test_profile_reads_the_yaml_shapes() -> None:
    profile = Profile.model_validate(
        {
            "options": ["113100", "RETAIN_SAFE_PRIVATE", "RETAIN_DEVICE_IDENTITY"],
            "safe_private": [{"creator": "GEMS_ACQU_01", "group": "0x0019", "element": "23"}],
            "pseudonym_prefix": "H1",
        }
    )
    assert Option.RETAIN_SAFE_PRIVATE in profile.options
    assert profile.safe_private_keys() == {("GEMS_ACQU_01", 0x19, 0x23)}
    assert profile.has(Option.RETAIN_DEVICE_IDENTITY)
    assert not profile.has(Option.CLEAN_DESCRIPTORS)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"options": ["RETAIN_UIDS"]}, "Basic"),
        ({"options": ["BASIC", "CLEAN_PIXEL_DATA"]}, "not supported"),
        ({"options": ["BASIC", "CLEAN_RECOGNIZABLE_VISUAL_FEATURES"]}, "not supported"),
        (
            {"options": ["BASIC", "113106", "113107"]},
            "exclude each other",
        ),
        ({"date_offset_min_days": 5, "date_offset_max_days": 4}, "greater"),
        ({"pseudonym_prefix": "123"}, "letter"),
        ({"pseudonym_prefix": "toolongprefix"}, "pattern"),
        ({"pseudonym_prefix": "lower"}, "pattern"),
        ({"unknown": 1}, "Extra"),
        ({"safe_private": [{"creator": "X", "group": "0010", "element": 1}]}, "odd"),
        ({"safe_private": [{"creator": "X", "group": "0011", "element": 256}]}, "less than"),
    ],
)
def test_profile_refuses_what_it_cannot_do(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Profile.model_validate(fields)


def test_profile_is_frozen() -> None:
    with pytest.raises(ValidationError):
        Profile().pseudonym_prefix = "X"  # type: ignore[misc]


# -- the table -----------------------------------------------------------------------------


def test_the_table_file_holds_table_e1_1() -> None:
    table = rows()
    assert TABLE_EDITION == "DICOM PS3.15 2024b"
    assert len(table) == 621
    tags = [row.tag for row in table]
    assert len(set(tags)) == len(tags)
    by_tag = {row.tag: row for row in table}
    assert by_tag["(0010,0010)"].basic is Action.Z
    assert by_tag["(0020,000D)"].basic is Action.U
    assert by_tag["(0008,1030)"].options[Option.CLEAN_DESCRIPTORS] is Action.C
    assert by_tag["(0008,1140)"].basic is Action.X_Z_U
    assert by_tag["(ggg1,eeee)"].options == {Option.RETAIN_SAFE_PRIVATE: Action.C}
    assert {"(50xx,xxxx)", "(60xx,3000)", "(60xx,4000)"} <= set(tags)


def test_options_override_the_basic_action() -> None:
    basic = resolve(frozenset({Option.BASIC}))
    default = resolve(Profile().options)
    assert basic.exact[0x00081030] is Action.X  # Study Description
    assert default.exact[0x00081030] is Action.C
    assert basic.exact[0x00101010] is Action.X  # Patient's Age
    assert default.exact[0x00101010] is Action.K
    assert basic.lookup(0x60023000) is Action.X and basic.lookup(0x50101234) is Action.X
    assert basic.lookup(0x60023001) is None
    assert basic.lookup(0x00280010) is None
    assert basic.private is Action.X
    assert resolve(frozenset({Option.BASIC, Option.RETAIN_SAFE_PRIVATE})).private is Action.C


def test_clean_wins_over_keep_when_two_options_disagree() -> None:
    row = Row(
        "(0010,2110)",
        "Allergies",
        Action.X,
        {
            Option.RETAIN_PATIENT_CHARACTERISTICS: Action.K,
            Option.CLEAN_DESCRIPTORS: Action.C,
        },
    )
    both = [Option.RETAIN_PATIENT_CHARACTERISTICS, Option.CLEAN_DESCRIPTORS]
    assert row.action(both) is Action.C
    assert row.action(reversed(both)) is Action.C
    assert row.action([Option.RETAIN_PATIENT_CHARACTERISTICS]) is Action.K
    assert row.action([Option.RETAIN_UIDS]) is Action.X


# -- clean actions on values ----------------------------------------------------------------


NAMES = ["Jansen^Pieter^Willem", "de Vries-Bakker^Anna"]
IDS = ["MRN-7731", "ACC 55123", "PX99"]


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("CT THORAX", "CT THORAX"),
        ("MR KNEE T2 3D", "MR KNEE T2 3D"),
        ("CT THORAX Jansen", "CT THORAX"),
        ("jansen pieter CT", "CT"),
        ("Thorax de Vries-Bakker", "Thorax"),
        ("MRN-7731 CT", "CT"),
        ("CT PX99", "CT"),
        ("ACC 55123 CT", "CT"),
        ("CT 2023-01-05", "CT"),
        ("CT 05.01.2023 12:30", "CT"),
        ("CT 1/5/23", "CT"),
        ("CT 5 JAN 2023", "CT"),
        ("CT Jan 5, 2023", "CT"),
        ("CT 20230105 123456", "CT"),
        ("CT 12:30:15.5 abdomen", "CT abdomen"),
        ("DOSE 12 mGy", "DOSE 12 mGy"),
        ("BRAIN 1234", "BRAIN"),
        ("Willem's scan", "'s scan"),
        ("", ""),
        ("first line Jansen\nsecond 2023-01-05 line", "first line\nsecond line"),
    ],
)
def test_clean_text(text: str, cleaned: str) -> None:
    assert clean_text(text, forbidden_tokens(NAMES, IDS)) == cleaned


def test_forbidden_tokens() -> None:
    tokens = forbidden_tokens(["O'Brien^Mary=オブライエン"], [" ID-1 ", ""])
    assert {"o", "brien", "mary", "オブライエン", "id-1", "id", "1"} <= tokens
    assert "" not in tokens


@pytest.mark.parametrize(
    ("value", "days", "shifted"),
    [
        ("20240229", -365, "20230301"),
        ("20240101", 0, "20240101"),
        ("2024.01.10", -10, "20231231"),
        ("2024013", -1, ""),
        ("20241301", -1, ""),
        ("abcdefgh", -1, ""),
        ("00010101", -1, ""),
    ],
)
def test_shift_da(value: str, days: int, shifted: str) -> None:
    assert shift_da(value, days) == shifted


@pytest.mark.parametrize(
    ("value", "shifted"),
    [
        ("20240110101500.123456+0100", "20240109101500.123456+0100"),
        ("20240110", "20240109"),
        ("202401", "202312"),
        ("2024", "2023"),
        ("20240", ""),
        ("x", ""),
        ("20241340", ""),
    ],
)
def test_shift_dt_moves_the_date_part_only(value: str, shifted: str) -> None:
    assert shift_dt(value, -1) == shifted


def test_parse_da_and_patient_age_edge_cases() -> None:
    assert parse_da(" 20240101 ") is not None
    assert parse_da("") is None
    assert patient_age("20240102", "20240101") is None
    assert patient_age("", "20240101") is None
    assert patient_age("20240101", "") is None
    assert patient_age("20240101", "20240101") == "000D"
    assert patient_age("20240101", "20240128") == "027D"
    assert patient_age("20240131", "20240229") == "004W"
    assert patient_age("20240131", "20240302") == "001M"
    assert patient_age("10000101", "20240101") == "999Y"
    assert patient_age("20000229", "20230228") == "022Y"
    assert patient_age("20000229", "20230301") == "023Y"


# -- details a slip in would go unnoticed elsewhere -----------------------------------------


def test_key_errors_name_their_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^the given key: "):
        load_or_create_key(tmp_path / "k", "short")
    path = tmp_path / "bad.key"
    path.write_text("short\n")
    path.chmod(0o600)
    with pytest.raises(ValueError, match=f"^{path}: "):
        load_or_create_key(path)
    path.chmod(0o660)
    with pytest.raises(PermissionError, match=f"^{path}: "):
        load_or_create_key(path)
    assert load_or_create_key(path, "x" * 32) == b"x" * 32  # exactly 32 characters is enough
    with pytest.raises(ValueError):
        load_or_create_key(path, "x" * 31)
    assert load_or_create_key(path, "  " + "ab" * 32 + "\n") == bytes.fromhex("ab" * 32)


def test_a_key_file_created_meanwhile_by_another_process_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pseudonym.key"
    theirs = "cd" * 32
    real_open = os.open

    def racing_open(name: str, flags: int, mode: int = 0o777) -> int:
        fd = real_open(name, os.O_WRONLY | os.O_CREAT, 0o600)  # the other process wins
        os.write(fd, (theirs + "\n").encode())
        os.close(fd)
        return real_open(name, flags, mode)

    monkeypatch.setattr("aifi.gateway.deid.keyed.os.open", racing_open)
    assert load_or_create_key(path) == bytes.fromhex(theirs)


def test_key_file_is_created_with_its_directories_and_synced(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "pseudonym.key"
    key = load_or_create_key(path)
    assert path.read_bytes() == key.hex().encode() + b"\n"


def test_uid_pseudonyms_have_no_leading_zero_form() -> None:
    keyed = Keyed(b"k" * 32)
    pseudo = keyed.uid("1.2.3.4")
    digits = pseudo[5:]
    assert len(digits) <= 39
    assert not keyed.is_pseudonym_uid("2.25.0" + digits)
    assert not keyed.is_pseudonym_uid("2.25.0" * 2)
    assert not keyed.is_pseudonym_uid("1.25." + digits)
    assert not keyed.is_pseudonym_uid("2.25.")
    raw = int(digits).to_bytes(16, "big")
    assert (
        raw[12:]
        == hmac.new(b"k" * 32, b"uid-check\x00" + raw[:12].hex().encode(), hashlib.sha256).digest()[
            :4
        ]
    )


def test_the_uid_cache_is_bounded() -> None:
    keyed = Keyed(b"k" * 32)
    first = keyed.uid("1.2.0")
    for n in range(100_002):
        keyed.uid(f"1.2.{n}")
    assert len(keyed._uids) <= 100_001
    assert keyed.uid("1.2.0") == first


def test_digest_separates_its_parts() -> None:
    keyed = Keyed(b"k" * 32)
    assert (
        keyed.digest("a", "b", "c") == hmac.new(b"k" * 32, b"a\x00b\x00c", hashlib.sha256).digest()
    )
    assert keyed.digest("a", "bc") != keyed.digest("a", "b", "c")
    assert (
        keyed.patient("P", "x")
        == "P" + base64.b32encode(keyed.digest("patient", "x")[:10]).decode()
    )
    assert keyed.accession("x") == base64.b32encode(keyed.digest("accession", "x")[:10]).decode()


def test_exceptions_carry_their_reason() -> None:
    assert Quarantine("burned in").reason == "burned in"
    assert str(Quarantine("burned in")) == "burned in"
    assert NotReidentifiable("unknown study").reason == "unknown study"
    assert str(NotReidentifiable("unknown study")) == "unknown study"


@pytest.mark.parametrize("text", ["0x0019", "0X0019", "0019", "19"])
def test_safe_private_groups_are_hex(text: str) -> None:
    assert (
        SafePrivate.model_validate({"creator": "C", "group": text, "element": "0x23"}).group == 0x19
    )
    assert SafePrivate(creator="C", group=0x19, element=0x23).element == 0x23


def test_table_helpers_without_their_caches() -> None:
    assert table._pattern("(60xx,3000)") == (0xFF00FFFF, 0x60003000)
    assert table._pattern("(50xx,xxxx)") == (0xFF000000, 0x50000000)
    fresh = table.rows.__wrapped__()
    assert fresh == rows()
    resolved = table.resolve.__wrapped__(frozenset({Option.BASIC}))
    assert resolved == resolve(frozenset({Option.BASIC}))
    assert resolved.lookup(0x60FE3000) is Action.X
    assert resolved.lookup(0x61003000) is None
    assert table._parse_action(" X/Z/U* ") is Action.X_Z_U


def test_a_table_file_with_other_columns_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Fake:
        def joinpath(self, name: str) -> Fake:
            assert name == table.TABLE_FILE
            return self

        def read_text(self, encoding: str) -> str:
            assert encoding == "utf-8"
            return "# comment\ntag\tname\tbasic\n(0010,0010)\tPatient's Name\tZ\n"

    monkeypatch.setattr(resources, "files", lambda package: Fake())
    with pytest.raises(ValueError, match="unexpected columns"):
        table.rows.__wrapped__()


def test_short_rows_are_padded() -> None:
    header = "\t".join(["tag", "name", "basic", *(o.name for o in table.OPTION_COLUMNS)])
    text = f"{header}\n(0010,0010)\tPatient's Name\tZ\n"

    class Fake:
        def joinpath(self, name: str) -> Fake:
            return self

        def read_text(self, encoding: str) -> str:
            return text

    import unittest.mock

    with unittest.mock.patch.object(resources, "files", return_value=Fake()):
        (row,) = table.rows.__wrapped__()
    assert row == Row("(0010,0010)", "Patient's Name", Action.Z, {})


def test_identity_tag_lists() -> None:
    assert identity._tags(["PatientName", "StudyDate"]) == (0x00100010, 0x00080020)
    assert 0x00100010 in identity.PATIENT_TAGS and 0x00100020 in identity.PATIENT_TAGS
    assert 0x00080050 in identity.STUDY_TAGS and 0x00080020 in identity.STUDY_TAGS
    assert 0x00100010 in identity.NAME_TAGS and 0x00080050 in identity.IDENTIFIER_TAGS
    with pytest.raises(ValueError, match="NoSuchKeyword"):
        identity._tags(["NoSuchKeyword"])


def test_age_at_exactly_one_year_and_punctuation_left_over() -> None:
    assert patient_age("20230101", "20240101") == "001Y"
    assert patient_age("20230102", "20240101") == "011M"
    forbidden = forbidden_tokens(NAMES, IDS)
    assert clean_text("CT THORAX, Jansen", forbidden) == "CT THORAX"
    assert clean_text("Jansen; CT/", forbidden) == "CT"
    assert clean_text("^CT_", forbidden) == "CT"


def test_date_offset_is_the_documented_hmac() -> None:
    keyed = Keyed(b"k" * 32)
    digest = hmac.new(b"k" * 32, b"date-offset\x00patient", hashlib.sha256).digest()
    assert keyed.date_offset("patient", -100, -1) == -100 + int.from_bytes(digest[:8]) % 100
