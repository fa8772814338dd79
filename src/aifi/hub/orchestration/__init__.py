"""IHE AIW-I's Task Manager and Task Requester on the hub (ARCHITECTURE.md steps 2 and 3).

- :mod:`~aifi.hub.orchestration.routing` — :class:`StudyRouter`: the hospital's routing rules
  (:mod:`aifi.ihe_profiles.rules`) decide per product, and a match becomes a UPS workitem;
- :mod:`~aifi.hub.orchestration.task_manager` — :class:`TaskManager`: the rounds that find
  complete studies (quiet period or completion signal), route them, follow late instances
  and keep deadlines, under a lease so one hub process leads.

May import: :mod:`aifi.hub.persistence`, :mod:`aifi.hub.worklist`, :mod:`aifi.hub.priors`,
:mod:`aifi.ihe_profiles`,
:mod:`aifi.dicomweb` (the store protocol), :mod:`aifi.dicom_json`, :mod:`aifi.clock`,
:mod:`aifi.errors`.
"""
