"""Everything that stands in for Slack and its people, and `hitl demo` built on it.

`standin` (a Slack Web API on 127.0.0.1), `simulator` (people clicking and typing), `wiring`
(a bot against the stand-in, used by the demo and the end-to-end tests), `run` (the demo) and
`data` (the shipped BANKING77 subset). The bot never imports it; only `hitl demo` does, lazily.
"""
