"""The training core: `runner.run_training` trains or resumes one job in a directory.

`python -m worker.training` runs one job in its own process and prints events as JSON lines,
so the worker can run training as a subprocess that a crash cannot take down with it.
Importing this package imports no torch (the CLI sets thread counts first).
"""
