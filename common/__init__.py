"""Below both processes: what the supervisor and the executors share (the failure vocabulary, the
tree token, safe log text, process trees: measuring, killing, watching a parent).

Nothing here imports supervisor/ or executor/, so the package graph stays acyclic
(tests/test_unit_layers.py checks it)."""
