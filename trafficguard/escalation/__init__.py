"""escalation stage: the only way content inspection is opened, and its records.

``policy`` (who may authorize what), ``grants`` (signed grants, revocations, target
index), ``audit`` (hash-chained, signed audit log), ``evidence`` (sealed, budgeted
evidence store), ``reveal`` (re-identification by confirmation), ``commands`` (CLI).
See docs/privacy.md.
"""
