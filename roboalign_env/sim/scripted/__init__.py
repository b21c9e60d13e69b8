"""Scripted robosuite policies, one module per task; see :mod:`.base` for the shared machinery."""
