"""Bolt listeners, grouped by Slack surface."""
