"""A small attributed subset of banking77 for `hitl demo`."""
