"""IHE radiology profiles, as pure code (no I/O):

* AIW-I (AI Workflow for Imaging): :mod:`~aifi.ihe_profiles.ups` (the UPS state machine of
  PS3.4 Annex CC as data), :mod:`~aifi.ihe_profiles.aiw` (workitems the Task Manager
  requests), :mod:`~aifi.ihe_profiles.rules` + :mod:`~aifi.ihe_profiles.normalise` (routing
  rules; the shipped ones are ``default_rules.yaml``);
* AIR (AI Results): :mod:`~aifi.ihe_profiles.air` (builders for TID 1500 SR, SEG, GSPS,
  SC and KOS result objects with algorithm identification, a validator naming the rule each
  violation breaks, and a summary of what a result says).

What it may import: only the leaves :mod:`aifi.dicom_json` (workitems are DICOM JSON) and
:mod:`aifi.errors`, and pydicom, highdicom, numpy, Pillow, pydantic and PyYAML. It never
imports :mod:`aifi.dicomweb`: the dependency between the two standards packages runs one
way, ``dicomweb`` → ``ihe_profiles`` (UPS-RS runs this package's state machine). Nor
:mod:`aifi.fhir`, :mod:`aifi.vendors`, :mod:`aifi.hub` or :mod:`aifi.gateway`.
"""
