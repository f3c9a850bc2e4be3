"""analyzers stage."""
