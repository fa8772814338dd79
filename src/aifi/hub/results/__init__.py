"""IHE AIR results on the hub: from a result object at the door to the AI result released to
the hospital.

The gate in front of STOW-RS (``gate``: which workitem a result belongs to in
``attribution``, what it says summarised once and kept in ``summary``), the answer of each
workitem when it ends (``completion``, reading the workitem through ``workitem``), and the
one place a result is released and its delivery queued (``release``).

May import: :mod:`aifi.dicom_json`, :mod:`aifi.clock`, :mod:`aifi.errors`,
:mod:`aifi.dicomweb`, :mod:`aifi.ihe_profiles`, :mod:`aifi.hub.persistence` and
:mod:`aifi.hub.store`; the delivery outbox only through the ``Enqueuer`` protocol of
``release``.
"""
