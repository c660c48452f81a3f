"""Sandboxed model runners: uploaded archives are code, so they never run in the worker.

`runner` is the child process (one per archive version): it confines itself (`confine`:
another user, Landlock, seccomp, resource limits), loads the archive, checks every operator
against the allowlist (`allowlist`) and serves forwards over its pipes (`protocol`).
`pool` is the worker's side: it starts runners, enforces the per-forward wall-clock limit
and replaces runners that hang or die.
"""
