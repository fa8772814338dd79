"""FHIR R4 for the EPD: Task per AI request, DiagnosticReport per result, subscriptions and
the EPD client. Not yet implemented: see the FHIR issue.
"""
