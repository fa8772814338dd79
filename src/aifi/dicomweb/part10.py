"""PS3.10 File Meta Information for data sets the project writes itself (generated
studies, reference results)."""

from __future__ import annotations

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

__all__ = ["with_file_meta"]


def with_file_meta(ds: Dataset, transfer_syntax_uid: str = ExplicitVRLittleEndian) -> Dataset:
    """``ds`` with new File Meta Information (PS3.10 §7.1): its SOP Class and Instance
    UIDs, ``transfer_syntax_uid`` (Explicit VR Little Endian by default) and pydicom's
    Implementation Class UID. Returns ``ds``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds
