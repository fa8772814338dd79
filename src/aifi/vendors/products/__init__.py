"""The reference AI products — DEMONSTRATORS computing simple, deterministic image
statistics on the generated pilot studies (:mod:`aifi.conformance.pilot_studies`); not
clinical algorithms, never for clinical use.

* :mod:`aifi.vendors.products.measure` — the image statistics (pure numpy).
"""
