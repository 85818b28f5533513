"""A small, realistic-looking history for the panel: versions with a lineage, runs, hormones.

No training: versions carry given metrics (``tests.factories``-style), runs are rows with
curves and decisions, hormones get events. Used by the browser tests and their screenshots.
"""

from __future__ import annotations

import math
from datetime import timedelta

from django.utils import timezone

from hormones.models import Hormone, HormoneEvent
from hormones.services import brain_state_snapshot, hormone_release, hormones_ensure
from improvement.choices import RunOrigin, RunStatus
from improvement.formatting import signed_percent
from improvement.models import ImprovementRun
from models_registry.models import ModelVersion, NeuralModel
from models_registry.nn.evaluation import EvaluationResult
from models_registry.nn.genome import build_module, count_parameters
from models_registry.services import model_create, version_create
from tests.factories import csv_task

HIDDEN = [[2], [8], [16], [32, 16], [64, 32], [24]]


def version_made(model: NeuralModel, *, score: float, latency_ms: float, hidden: list[int],
                 parent: ModelVersion | None = None, activate: bool = True, note: str = "") -> ModelVersion:
    genome = {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": hidden, "activation": "relu",
              "dropout": 0.0, "norm": "none"}
    module = build_module(genome)
    latency = {"p50_ms_b1": latency_ms * 0.8, "p95_ms_b1": latency_ms, "p99_ms_b1": latency_ms * 1.1,
               "p50_ms_b256": latency_ms * 4, "p95_ms_b256": latency_ms * 5, "p99_ms_b256": latency_ms * 5}
    n_parameters = count_parameters(module)
    evaluation = EvaluationResult(score=score, metric="accuracy", latency=latency, n_parameters=n_parameters,
                                  size_bytes=n_parameters * 4, n_rows=36)
    return version_create(model=model, genome=genome, state_dict=module.state_dict(), evaluation=evaluation,
                          activate=activate, parent=parent, note=note or f"hidden {hidden}",
                          reason="seeded for the panel")


def curve(n: int, *, start_loss: float = 1.1, start_score: float = 0.4, end_score: float = 0.86) -> list[dict]:
    t0 = timezone.now().timestamp() - n
    return [{"phase": "train", "epoch": i + 1, "train_loss": start_loss * math.exp(-i / (n / 3)) + 0.05,
             "val_score": end_score - (end_score - start_score) * math.exp(-i / (n / 4)), "lr": 0.003,
             "t": round(t0 + i, 3)} for i in range(n)]


def panel_history() -> dict:
    """A task with a model of six versions, finished and running runs, hormone events, a brain state."""
    hormones_ensure()
    task = csv_task("blobs", n=180)
    model = model_create(task=task, name="baseline")
    plan = [(0.52, 0.09, HIDDEN[0], None), (0.71, 0.12, HIDDEN[1], 0), (0.80, 0.16, HIDDEN[2], 1),
            (0.86, 0.31, HIDDEN[3], 2), (0.84, 0.08, HIDDEN[4], 2), (0.88, 0.22, HIDDEN[5], 3)]
    versions: list[ModelVersion] = []
    for score, latency, hidden, parent in plan:
        versions.append(version_made(model, score=score, latency_ms=latency, hidden=hidden,
                                     parent=versions[parent] if parent is not None else None))
    now = timezone.now()
    for i, version in enumerate(versions):  # spread over the last hour, as a real loop would
        ModelVersion.objects.filter(pk=version.pk).update(created_at=now - timedelta(minutes=58 - 10 * i))
    runs = []
    for i, (strategy, before, after) in enumerate([("training", 0, 1), ("architecture", 1, 2),
                                                   ("training", 2, 3), ("optimization", 2, 4),
                                                   ("distillation", 3, 5)]):
        b, a = versions[before], versions[after]
        runs.append(ImprovementRun.objects.create(
            model=model, strategy=strategy, status=RunStatus.PROMOTED, origin=RunOrigin.LOOP,
            trigger_reason=f"[trigger] score {b.score:.2f} below target", baseline_version=b, result_version=a,
            objective="latency" if strategy == "optimization" else "score",
            baseline_metrics=b.metrics, candidate_metrics=a.metrics, gain=round((a.score - b.score) / (1 - b.score), 4),
            decision=f"promoted: gain {signed_percent((a.score - b.score) / (1 - b.score))} less error (≥ 10%)",
            progress=1.0, progress_message="done", curve=curve(40 + 10 * i, start_score=b.score, end_score=a.score),
            log="[12:00:00] strategy training, baseline v1\n[12:00:03] promoted\n",
            started_at=now - timedelta(minutes=50 - 10 * i), finished_at=now - timedelta(minutes=48 - 10 * i),
            cpu_seconds=12.5 + i, peak_memory_mb=310.0,
        ))
    rejected = ImprovementRun.objects.create(
        model=model, strategy="architecture", status=RunStatus.REJECTED, baseline_version=versions[-1],
        objective="score", baseline_metrics=versions[-1].metrics, candidate_metrics=versions[-2].metrics,
        gain=-0.02, decision=f"rejected: gain {signed_percent(-0.02)} less error, short of the 10% threshold", progress=1.0, curve=curve(30),
        started_at=now - timedelta(minutes=4), finished_at=now - timedelta(minutes=3),
    )
    running = ImprovementRun.objects.create(
        model=model, strategy="training", status=RunStatus.RUNNING, origin=RunOrigin.OPERATOR,
        trigger_reason="requested by alice", baseline_version=versions[-1], objective="score",
        baseline_metrics=versions[-1].metrics, progress=0.42, progress_message="train: epoch 21/50 val 0.8711",
        curve=curve(21, start_score=0.8, end_score=0.87), started_at=now - timedelta(seconds=40),
        heartbeat_at=now, worker="demo:1",
    )
    hormone_history()
    brain_state_snapshot(queue_length=0, runs_in_flight=1, fleet_health=0.71)
    return {"task": task, "model": model, "versions": versions, "runs": runs, "rejected": rejected,
            "running": running}


HORMONE_PLAN = [
    (-55, "dopamine", 0.30, "run #1 promoted: gain 0.396"), (-50, "adrenaline", 0.45, "shadow checks disagree on blobs"),
    (-46, "cortisol", 0.25, "run #6 rejected"), (-40, "dopamine", 0.25, "run #2 promoted: gain 0.310"),
    (-34, "serotonin", 0.20, "serving stable for an hour"), (-29, "adrenaline", 0.35, "latency budget breached"),
    (-24, "oxytocin", 0.30, "distillation from the best model"), (-18, "cortisol", 0.20, "resource pressure: cpu 93%"),
    (-12, "dopamine", 0.20, "run #4 promoted: gain 0.200"), (-6, "adrenaline", 0.30, "drift on blobs"),
    (-3, "serotonin", -0.15, "serving switched"), (-1, "dopamine", 0.15, "run #5 promoted: gain 0.143"),
]


def hormone_history() -> None:
    """Hormone events spread over the last hour (levels decay between them, as they would live)."""
    hormones_ensure()
    now = timezone.now()
    for minutes, name, delta, cause in HORMONE_PLAN:
        at = now + timedelta(minutes=minutes)
        hormone = Hormone.objects.get(name=name)
        before = hormone.level_at(at)
        after = hormone.clamp(before + delta)
        event = HormoneEvent.objects.create(hormone=hormone, delta=after - before, level_before=before,
                                            level_after=after, cause=cause)
        HormoneEvent.objects.filter(pk=event.pk).update(created_at=at)
        hormone.level, hormone.updated_at = after, at
        hormone.save(update_fields=["level", "updated_at"])
    hormone_release(name="dopamine", delta=0.05, cause="panel opened")
