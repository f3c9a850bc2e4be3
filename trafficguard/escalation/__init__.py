"""escalation stage."""
