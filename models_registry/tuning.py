"""Tuning a task's algorithm on the validation split, once, where its evaluation runs (a worker).

A class named by ``algorithm_path`` may offer ``tuning_grid(metric, y_train) -> [settings, ...]``
(the table baselines in ``models_registry.algorithms`` do: step size, leaves per tree, class
weighting). ``algorithm_tune`` fits each setting on the training split and scores it on the
validation split with the task's metric — never the gate split, which judges the algorithm
against neural versions, nor the sealed test split — within ``TUNING_BUDGET_S``, and keeps the
best (the first of equals, the default being first). The choice is stored on the task
(``Task.algorithm_params``: the path it was tuned for, the settings, every setting tried with
its validation score), so every process that serves the algorithm fits it once with those
settings (``models_registry.implementations.algorithm_for_task``) instead of tuning again.

A validation split under ``TUNING_MIN_VAL_ROWS`` rows cannot tell settings apart reliably; the
class's defaults are kept then.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from models_registry.implementations import task_dataset
from models_registry.loading import load_callable
from models_registry.models import Task
from models_registry.nn.evaluation import evaluate
from models_registry.sealed import deciding

logger = logging.getLogger(__name__)

#: Fewer validation rows than this and the class's defaults are kept.
TUNING_MIN_VAL_ROWS = 200
#: Wall-clock seconds the grid may take; the setting being fitted when it runs out is finished.
TUNING_BUDGET_S = 120.0


def algorithm_tune(*, task: Task, budget_s: float = TUNING_BUDGET_S) -> dict[str, Any] | None:
    """Tune the task's algorithm on the validation split and store the choice; returns the record,
    or None when there is nothing to tune (no grid, too few validation rows)."""
    if not task.algorithm_path or task.n_val < TUNING_MIN_VAL_ROWS:
        return None
    target = load_callable(task.algorithm_path)
    grid_of = getattr(target, "tuning_grid", None) if isinstance(target, type) else None
    if grid_of is None:
        return None
    dataset = task_dataset(task)
    (X_train, y_train), (X_val, y_val) = dataset.train, dataset.val
    grid = list(grid_of(task.metric, y_train))
    if len(grid) < 2:
        return None
    tried: list[dict[str, Any]] = []
    start = time.monotonic()
    with deciding("algorithm tuning"):
        for params in grid:
            if tried and time.monotonic() - start >= budget_s:
                break
            fitted = target(**params).fit(X_train, y_train)
            result = evaluate(fitted.predict, X_val, y_val, task.output_kind, metric=task.metric, split="val",
                              measure=False)
            tried.append({"params": params, "val": round(float(result.score), 6)})
    best = max(tried, key=lambda t: t["val"])  # the first of equals: the default is first
    record = {"path": task.algorithm_path, "params": best["params"], "metric": task.metric, "split": "val",
              "n_val": int(len(y_val)), "tried": tried, "of": len(grid), "seconds": round(time.monotonic() - start, 1)}
    Task.objects.filter(pk=task.pk).update(algorithm_params=record)
    task.algorithm_params = record
    logger.info("task %s: %s tuned on %d validation rows: %s (%s %.4f; %d of %d settings in %.0f s)", task.slug,
                task.algorithm_path, len(y_val), best["params"], task.metric, best["val"], len(tried), len(grid),
                record["seconds"])
    return record
