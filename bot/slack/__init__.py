"""Slack: Block Kit builders, listeners, the poster, and a Slack stand-in for tests and demo."""
