"""The QIDO-RS corpus of ``aifi bench dicomweb``: generated patients (Dutch family and given
names), their studies as small instances, and the queries asked of them."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from aifi.conformance.synthetic import small_instance

FAMILY = [
    "Jansen",
    "deVries",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "deBoer",
    "Mulder",
    "deGroot",
    "Bos",
    "Vos",
    "Peters",
    "Hendriks",
    "vanLeeuwen",
    "Dekker",
    "Brouwer",
]
GIVEN = ["Anna", "Bram", "Cees", "Daan", "Eva", "Fleur", "Gijs", "Hanna", "Isa", "Joris"]


@dataclass
class QidoCorpus:
    studies: list[dict[str, str]]

    def queries(self, rng: random.Random) -> list[tuple[str, str]]:
        """(kind, path?query) — one of each kind, drawn at random from the corpus."""
        s = rng.choice(self.studies)
        day = s["StudyDate"]
        return [
            ("PatientID", f"/studies?PatientID={s['PatientID']}"),
            ("PatientName*", f"/studies?PatientName={s['PatientName'][:5]}*&limit=50"),
            ("StudyDate range", f"/studies?StudyDate={day[:6]}01-{day[:6]}07&limit=50"),
            ("AccessionNumber", f"/studies?AccessionNumber={s['AccessionNumber']}"),
            ("Modality+date", f"/studies?ModalitiesInStudy=MR&StudyDate={day}&limit=50"),
            ("series of study", f"/studies/{s['StudyInstanceUID']}/series"),
            (
                "instances of series",
                f"/studies/{s['StudyInstanceUID']}/series/{s['SeriesInstanceUID']}/instances",
            ),
        ]


def qido_corpus(instances: int, seed: int = 7) -> tuple[QidoCorpus, Iterator[bytes]]:
    """Studies of 2 series × 5 instances over 5,000 patients and two years."""
    rng = random.Random(seed)
    n_studies = max(1, instances // 10)
    studies: list[dict[str, str]] = []
    for i in range(n_studies):
        p = i % 5000
        name = f"{FAMILY[p % len(FAMILY)]}^{GIVEN[(p // len(FAMILY)) % len(GIVEN)]}{p}"
        studies.append(
            {
                "PatientName": name,
                "PatientID": f"P{p:06d}",
                "AccessionNumber": f"A{i:08d}",
                "StudyDate": f"{2025 + i % 2}{1 + rng.randrange(12):02d}"
                f"{1 + rng.randrange(28):02d}",
                "Modality2": rng.choice(["MR", "SR", "SEG", "PR"]),
            }
        )

    def files() -> Iterator[bytes]:
        for s in studies:
            yield from small_instance(s)  # fills StudyInstanceUID/SeriesInstanceUID into s

    return QidoCorpus(studies), files()
