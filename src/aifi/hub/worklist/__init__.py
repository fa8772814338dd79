"""The UPS worklist (DICOM PS3.4 Annex CC; IHE AIW-I, ARCHITECTURE.md step 4) on the hub's
database.

- :mod:`~aifi.hub.worklist.service` — :class:`SqlWorklist`: the
  :class:`aifi.dicomweb.worklist.Worklist` the UPS-RS routers use; every state change in one
  transaction, the results of a product's workitem told in that transaction;
- :mod:`~aifi.hub.worklist.events` — UPS event reports and subscriptions (PS3.4 CC.2.4);
- :mod:`~aifi.hub.worklist.visibility` — what an AI product's Task Performer may see and
  store (its workitems' inputs and results).

May import: :mod:`aifi.hub.persistence`, :mod:`aifi.dicomweb`, :mod:`aifi.ihe_profiles`,
:mod:`aifi.dicom_json`, :mod:`aifi.clock`, :mod:`aifi.errors`; :mod:`aifi.hub.results` only
for the result rows a performer may see (visibility).
"""
