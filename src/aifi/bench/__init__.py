"""Benchmarks that drive aifi as its users do (they are not part of the product).

``aifi bench gateway`` (:mod:`aifi.bench.gateway`): the hospital gateway's C-STORE ingest
against a bare pynetdicom SCP and DCMTK's storescp, pseudonymisation CPU, memory and the
hand X-ray round trip. (The hub's benchmarks still live in ``aifi.bench.dicomweb*``.)
"""
