"""``aifi conformance performer``: an AI product tested as an IHE AIW-I Task Performer.

The kit starts its own private hub (:mod:`~.kit_hub`: embedded database, authentication on)
with a recorder in front (:mod:`~.recorder`), registers a performer client for the product,
starts the product (:mod:`~.product`: the vendor's command, a product started by hand, or a
push endpoint behind the kit's push adapter), stores generated, pseudonymised test studies
(:mod:`~.studies`) as the hospital (:mod:`~.driver`), follows each workitem
(:mod:`~.observe`, :mod:`~.record`), and judges what the product did (:mod:`~.checks`) in
the scenarios of :mod:`~.scenarios`. :mod:`~.command` is the command.

What it may import: :mod:`aifi.hub` (to run the private hub and register its clients),
:mod:`aifi.gateway.deid` (the test studies are pseudonymised as a gateway would),
:mod:`aifi.vendors` (the push adapter, the workitem tags), :mod:`aifi.conformance` (the
generated studies), :mod:`aifi.ihe_profiles` (rules, AIR validation), the codecs of
:mod:`aifi.dicomweb`, the leaves and :mod:`aifi.conformance_kit.report`.
"""
