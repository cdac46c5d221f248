"""The Docker-compatible REST API (`rootless system service`): a front end over the engine.

Nothing outside this package imports it: `rootless system service` loads it in its own command.
"""
