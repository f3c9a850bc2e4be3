"""voip stage."""
