"""DICOM JSON (PS3.18 Annex F) → the Native DICOM Model XML (PS3.19 Annex A.1). Pure code.

DICOMweb answers in XML when a client asks for ``multipart/related;
type="application/dicom+xml"`` (QIDO-RS results, WADO-RS metadata, the STOW-RS response;
PS3.18 §8.7.3.3.2 and Annex F.3). The hub keeps every data set as DICOM JSON, so XML is a
mechanical rewrite of it, one element per JSON member:

* ``<NativeDicomModel xml:space="preserve">`` in the namespace
  ``http://dicom.nema.org/PS3.19/models/NativeDICOM`` (PS3.19 Table A.1.5-1, A.1.6).
* ``<DicomAttribute tag="00100010" vr="PN" keyword="PatientName">``; ``keyword`` comes from
  the PS3.6 data dictionary and is left out for private and unknown tags; a private
  attribute carries ``privateCreator`` when its Private Creator element is in the same
  data set (PS3.19 Table A.1.5-2).
* ``<Value number="n">`` per value (1-based); an empty value is an empty element.
* ``<PersonName number="n">`` with ``<Alphabetic>``, ``<Ideographic>``, ``<Phonetic>``, each
  holding ``<FamilyName>``, ``<GivenName>``, ``<MiddleName>``, ``<NamePrefix>``,
  ``<NameSuffix>`` (only the components present).
* ``<Item number="n">`` per sequence item, holding the item's attributes.
* ``<BulkData uri="…">`` for a ``BulkDataURI``; ``<InlineBinary>`` (base64) for
  ``InlineBinary``.

Characters XML 1.0 cannot carry (C0 controls other than tab, LF, CR; lone surrogates;
U+FFFE/U+FFFF) are replaced by U+FFFD, so the output is always well-formed; CR is written
as ``&#13;`` so that LT/ST/UT text keeps its CRLF line ends through an XML parser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pydicom.datadict import keyword_for_tag

from aifi.dicom_json import first

NATIVE_DICOM_NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
"""Default namespace of the Native DICOM Model (PS3.19 A.1.6)."""

XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
"""Component groups of a Person Name, in DICOM JSON (F.2.2) and XML (A.1.5) alike."""

PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
"""The five components of a group, in their ``^``-separated order (PS3.5 §6.2)."""

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: str) -> str:
    # CR as a character reference: parsers would otherwise normalise CRLF to LF (XML §2.11).
    return escape(_NOT_XML.sub("\ufffd", value), {"\r": "&#13;"})


def _attr(value: str) -> str:
    return quoteattr(_NOT_XML.sub("\ufffd", value))


def _scalar(value: Any) -> str:
    """A JSON value as the string a ``<Value>`` holds (numbers as JSON writes them)."""
    if value is None:
        return ""
    if isinstance(value, bool):  # not a DICOM type; be tolerant when reading
        return "1" if value else "0"
    return str(value)


def _keyword(tag: str) -> str | None:
    try:
        number = int(tag, 16)
    except ValueError:
        return None
    if (number >> 16) % 2 == 1:  # private group: no standard keyword
        return None
    keyword = keyword_for_tag(number)
    return keyword or None


def _private_creator(tag: str, dataset: Mapping[str, Any]) -> str | None:
    """The Private Creator of a private data element, looked up in its own data set.

    A private element ``gggg,xxyy`` (``xx`` ≥ 0x10) is reserved by ``gggg,00xx``
    (PS3.5 §7.8.1).
    """
    try:
        number = int(tag, 16)
    except ValueError:
        return None
    group, element = number >> 16, number & 0xFFFF
    if group % 2 == 0 or element < 0x1000:
        return None
    creator = first(dataset, f"{group:04X}{element >> 8:04X}")
    return creator if isinstance(creator, str) else None


def _person_name(number: int, value: Any) -> str:
    if not isinstance(value, Mapping):
        # Tolerate a plain string (``"Doe^John"``) as the alphabetic group.
        value = {"Alphabetic": value} if value else {}
    out = [f'<PersonName number="{number}">']
    for group in PN_GROUPS:
        text = value.get(group)
        if not text:
            continue
        out.append(f"<{group}>")
        for name, component in zip(PN_COMPONENTS, str(text).split("^"), strict=False):
            if component:
                out.append(f"<{name}>{_text(component)}</{name}>")
        out.append(f"</{group}>")
    out.append("</PersonName>")
    return "".join(out)


def _attribute(tag: str, element: Mapping[str, Any], dataset: Mapping[str, Any]) -> str:
    vr = str(element.get("vr", "UN"))
    head = [f"<DicomAttribute tag={_attr(tag.upper())} vr={_attr(vr)}"]
    keyword = _keyword(tag)
    if keyword:
        head.append(f" keyword={_attr(keyword)}")
    creator = _private_creator(tag, dataset)
    if creator:
        head.append(f" privateCreator={_attr(creator)}")
    head.append(">")
    body: list[str] = []
    if "BulkDataURI" in element:
        body.append(f"<BulkData uri={_attr(str(element['BulkDataURI']))}/>")
    elif "InlineBinary" in element:
        body.append(f"<InlineBinary>{_text(str(element['InlineBinary']))}</InlineBinary>")
    else:
        values = element.get("Value") or []
        for number, value in enumerate(values, start=1):
            if vr == "SQ":
                items = value if isinstance(value, Mapping) else {}
                body.append(f'<Item number="{number}">{_dataset(items)}</Item>')
            elif vr == "PN":
                body.append(_person_name(number, value))
            else:
                body.append(f'<Value number="{number}">{_text(_scalar(value))}</Value>')
    return "".join(head) + "".join(body) + "</DicomAttribute>"


def _dataset(dataset: Mapping[str, Any]) -> str:
    return "".join(
        _attribute(tag, element, dataset)
        for tag, element in sorted(dataset.items())
        if isinstance(element, Mapping) and not tag.upper().endswith("0000")
        # Group lengths are not part of the model (PS3.19 A.1.1).
    )


def json_to_native_xml(dataset: Mapping[str, Any]) -> bytes:
    """One DICOM JSON object as a Native DICOM Model document (UTF-8, with declaration).

    ``{"00100020": {"vr": "LO", "Value": ["P1"]}}`` becomes ::

        <?xml version="1.0" encoding="UTF-8"?>
        <NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM"
                          xml:space="preserve">
          <DicomAttribute tag="00100020" vr="LO" keyword="PatientID">
            <Value number="1">P1</Value>
          </DicomAttribute>
        </NativeDicomModel>

    (without the indentation: whitespace is significant under ``xml:space="preserve"``).
    """
    document = (
        f'<NativeDicomModel xmlns="{NATIVE_DICOM_NAMESPACE}" xml:space="preserve">'
        f"{_dataset(dataset)}</NativeDicomModel>"
    )
    return XML_DECLARATION + document.encode("utf-8")


def json_list_to_native_xml(datasets: Iterable[Mapping[str, Any]]) -> list[bytes]:
    """One document per data set (the parts of a ``multipart/related`` XML response)."""
    return [json_to_native_xml(ds) for ds in datasets]
