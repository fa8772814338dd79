"""Adapters to AI products (UPS-RS pull performers, push adapters) and reference performers.
Not yet implemented: see the AIW-I and AIR issues.
"""
