"""Serving: which implementation answers a task's live predictions, and how well it does.

* ``models``     — ``ServingState`` (one row per task) and ``ServingSwitch`` (every switch).
* ``router``     — the active implementation per task as a predict function, cached per process.
* ``predict``    — one prediction: run the route, time it, fold it into the tracker, maybe shadow it.
* ``tracker``    — in-memory latency/throughput/error aggregates, flushed as ``live`` samples.
* ``switching``  — ``serving_decide`` (pure), ``serving_switch`` (the one service that changes
  the serving state) and ``serving_reevaluate``.
* ``shadow``     — off-request-path comparison of neural outputs with the algorithm.
* ``selectors``  — reads: state, switches, neural-vs-algorithmic comparison.

Nothing is imported here: ``models_registry.models`` imports ``serving.models`` at its end.
"""
