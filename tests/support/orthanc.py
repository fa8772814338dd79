"""Orthanc with its DICOMweb plugin as an independent peer (tests only)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from aifi.conformance.orthanc import OrthancPeer, orthanc_unavailable


def needs_orthanc() -> None:
    """Skip the test (with the reason) when Orthanc or its DICOMweb plugin is missing,
    except under CI, which must run it."""
    reason = orthanc_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Orthanc interoperability tests: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def orthanc() -> Iterator[OrthancPeer]:
    """A private Orthanc for the test module."""
    needs_orthanc()
    with OrthancPeer() as peer:
        yield peer
