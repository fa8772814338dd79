"""Benchmarks that drive aifi as its users do (they are not part of the product; the hub
never imports this package).

- ``aifi bench dicomweb`` (:mod:`~aifi.bench.dicomweb`): STOW-RS, WADO-RS and QIDO-RS of the
  hub against Orthanc with its DICOMweb plugin on the same machine, with a static-file and a
  store-only ceiling (:mod:`~aifi.bench.store_only`), the QIDO corpus of
  :mod:`~aifi.bench.qido_corpus`, the cost of each process (:mod:`~aifi.bench.process`);
- ``aifi bench turnaround`` (:mod:`~aifi.bench.turnaround`): studies through the whole AIW-I
  chain with the three reference products, per product's norm time;
- ``aifi bench workflow`` (:mod:`~aifi.bench.workflow`): the UPS-RS worklist under load;
- ``aifi bench gateway`` (:mod:`~aifi.bench.gateway`): the hospital gateway's C-STORE ingest
  against a bare pynetdicom SCP (:mod:`~aifi.bench.bare_scp`) and DCMTK's storescp,
  pseudonymisation CPU, memory and the hand X-ray round trip.

May import anything of aifi (it drives the hub, the gateway and the reference products).
"""
