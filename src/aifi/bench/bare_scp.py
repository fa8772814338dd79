"""The reference a Python C-STORE SCP is measured against: a bare pynetdicom SCP that only
writes each received data set to a file and fsyncs it before answering success (PS3.4
Annex B), nothing else — the ceiling for a Python SCP on the machine.

Run as ``python -m aifi.bench.bare_scp PORT FOLDER``; it serves until terminated.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


def serve(port: int, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)

    def on_store(event: Any) -> int:
        path = folder / f"{event.request.AffectedSOPInstanceUID}.dcm"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, event.encoded_dataset())
            os.fsync(fd)
        finally:
            os.close(fd)
        return 0x0000

    ae = AE(ae_title="BARE-SCP")
    ae.maximum_pdu_size = 0
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None
        ae.add_supported_context(context.abstract_syntax, context.transfer_syntax)
    ae.add_supported_context(Verification)
    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[(evt.EVT_C_STORE, on_store)])


if __name__ == "__main__":  # pragma: no cover - process entry point
    serve(int(sys.argv[1]), Path(sys.argv[2]))
