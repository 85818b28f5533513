"""A run's checkpoints: what an attempt after a dead worker resumes from instead of starting over.

A strategy saves, per phase (a key such as ``training-0-fine-tune``), the best weights it has
so far and a few notes (the validation score, the seconds spent, the genome). The weights are a
safetensors file under ``checkpoints/run-<id>/``; the index is the run's ``checkpoint`` field.
Saves are conditional on this worker still holding the run, so a worker that was written off
(and whose run another worker resumed) cannot overwrite the newer attempt's checkpoints. Saves
are throttled to one per phase every ``every_s`` seconds, except the final save of a phase.
The architecture search keeps its trials in ``SearchCandidate`` rows instead (``runs.search``).
When the run ends, however it ends, its checkpoint files are removed (``checkpoints_delete``).
"""

from __future__ import annotations

import logging
import time

import torch
from django.db import transaction

from improvement.choices import RunStatus
from improvement.models import ImprovementRun
from models_registry.weights import WeightsError, blob_delete, weights_load, weights_save

logger = logging.getLogger(__name__)

#: The least time between two saves of one phase (the final save of a phase is never held back).
CHECKPOINT_EVERY_S = 5.0


class RunCheckpoints:
    """The ``Checkpoints`` of one run attempt (``improvement.strategies.registry.Checkpoints``)."""

    def __init__(self, run_id: int, worker: str, *, every_s: float = CHECKPOINT_EVERY_S) -> None:
        self.run_id, self.worker, self.every_s = run_id, worker[:120], every_s
        self._saved_at: dict[str, float] = {}

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        entry = (ImprovementRun.objects.values_list("checkpoint", flat=True).get(pk=self.run_id) or {}).get(key)
        if not entry:
            return None
        try:
            state = weights_load(entry["file"], sha256=entry["sha256"])
        except (WeightsError, KeyError) as exc:
            logger.warning("run #%s: checkpoint %s unusable (%s); the phase starts over", self.run_id, key, exc)
            return None
        return state, dict(entry.get("meta", {}))

    def save(self, key: str, state: dict[str, torch.Tensor], meta: dict, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._saved_at.get(key, -1e9) < self.every_s:
            return
        self._saved_at[key] = now
        name, sha, _ = weights_save(state, folder=f"checkpoints/run-{self.run_id}")
        replaced = ""
        with transaction.atomic():
            row = (ImprovementRun.objects.select_for_update()
                   .filter(pk=self.run_id, status=RunStatus.RUNNING, worker=self.worker)
                   .values_list("checkpoint", flat=True).first())
            if row is None:
                # No longer this worker's run (cancelled, finished, written off): keep nothing.
                transaction.on_commit(lambda: blob_delete(name))
                return
            index = dict(row or {})
            replaced = (index.get(key) or {}).get("file", "")
            index[key] = {"file": name, "sha256": sha, "meta": {**meta, "final": final}}
            ImprovementRun.objects.filter(pk=self.run_id).update(checkpoint=index)
        if replaced and replaced != name:
            blob_delete(replaced)


def checkpoints_delete(*, run_id: int) -> int:
    """Remove an ended run's checkpoint files and empty its index; the number of files removed."""
    index = ImprovementRun.objects.values_list("checkpoint", flat=True).filter(pk=run_id).first() or {}
    names = [entry.get("file", "") for entry in index.values() if isinstance(entry, dict)]
    for name in names:
        blob_delete(name)
    ImprovementRun.objects.filter(pk=run_id).update(checkpoint={})
    return len([n for n in names if n])


__all__ = ["CHECKPOINT_EVERY_S", "RunCheckpoints", "checkpoints_delete"]
