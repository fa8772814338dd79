"""IHE radiology profiles: AIW-I (UPS worklist state machine and Task Manager rules) and
AIR (AI result builders and validators). Not yet implemented: see the AIW-I and AIR issues.
"""
