"""The hospital's pseudonymisation key and everything derived from it by keyed HMAC-SHA256.

Every pseudonym is a keyed HMAC of the original, so the same original always gets the same
pseudonym (a re-sent study de-duplicates at the hub, a follow-up study gets the same patient
pseudonym) and nobody without the key can compute one from a guessed original (a bare hash
of a Patient ID could be reversed by trying every ID). Each derivation has its own label, so
a UID pseudonym never equals a patient pseudonym of the same text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import stat
from pathlib import Path

KEY_BYTES = 32
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_UID_PREFIX = "2.25."


def load_or_create_key(path: Path, given: str | None = None) -> bytes:
    """The pseudonymisation key: ``given`` (a setting) wins; else the key file at ``path``;
    else 32 random bytes written to a new file at ``path``, created with mode 0600 (never
    briefly wider: the mode is set by the ``open`` that creates it).

    ``given`` is 64 hex digits (32 bytes) or any other secret of at least 32 characters
    (its UTF-8 bytes). The file holds the key as 64 hex digits and a newline. A key file that
    group or others may read is refused: with the key, pseudonyms of guessed Patient IDs can
    be computed."""
    if given is not None:
        return _parse_key(given.strip(), "the given key")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return _create_key(path)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"{path}: key file must not be accessible to group or others")
    return _parse_key(path.read_text(encoding="ascii").strip(), str(path))


def _parse_key(text: str, source: str) -> bytes:
    if _HEX_KEY.fullmatch(text):
        return bytes.fromhex(text)
    if len(text) < KEY_BYTES:
        raise ValueError(f"{source}: a key is 64 hex digits or a secret of 32+ characters")
    return text.encode("utf-8")


def _create_key(path: Path) -> bytes:
    key = os.urandom(KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return load_or_create_key(path)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(key.hex() + "\n")
        file.flush()
        os.fsync(file.fileno())
    return key


class Keyed:
    """Pseudonyms from one key (HMAC-SHA256, one label per kind of pseudonym)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a pseudonymisation key needs at least 16 bytes")
        self._key = key
        self._uids: dict[str, str] = {}

    def digest(self, label: str, *parts: str) -> bytes:
        """HMAC-SHA256 over the label and the parts, NUL-separated."""
        message = "\x00".join((label, *parts)).encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """``2.25.<n>``: n is 128 bits, 96 from the HMAC of the original UID and 32 a keyed
        check of those 96, so that :meth:`is_pseudonym_uid` can tell our pseudonyms from
        other 2.25 UIDs (e.g. those an AI product creates) without the map. At most 44
        characters (PS3.5 §9.1: UIDs ≤ 64)."""
        cached = self._uids.get(original)
        if cached is None:
            body = self.digest("uid", original)[:12]
            check = self.digest("uid-check", body.hex())[:4]
            cached = _UID_PREFIX + str(int.from_bytes(body + check))
            if len(self._uids) > 100_000:
                self._uids.clear()
            self._uids[original] = cached
        return cached

    def is_pseudonym_uid(self, uid: str) -> bool:
        """Whether ``uid`` has the form this key gives its UID pseudonyms (false positives:
        one in 2**32 for a random 2.25 UID)."""
        if not uid.startswith(_UID_PREFIX):
            return False
        digits = uid[len(_UID_PREFIX) :]
        # str(n) of n < 2**128: at most 39 digits, no leading zero (PS3.5 §9.1).
        if not digits.isdigit() or len(digits) > 39 or digits[0] == "0":
            return False
        number = int(digits)
        if number >= 1 << 128:
            return False
        raw = number.to_bytes(16)
        return hmac.compare_digest(self.digest("uid-check", raw[:12].hex())[:4], raw[12:])

    def patient(self, prefix: str, identity: str) -> str:
        """The patient pseudonym: prefix + 16 base32 characters (80 bits of the HMAC)."""
        return prefix + _base32(self.digest("patient", identity)[:10])

    def accession(self, original: str) -> str:
        """An Accession Number pseudonym: 16 base32 characters (SH, ≤ 16)."""
        return _base32(self.digest("accession", original)[:10])

    def date_offset(self, identity: str, low: int, high: int) -> int:
        """A whole number of days in [low, high], one per patient."""
        span = high - low + 1
        return low + int.from_bytes(self.digest("date-offset", identity)[:8]) % span


def _base32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")
