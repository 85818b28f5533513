"""The learned improvement predictor: a registered model that ranks the loop's runs.

Design
------
* **Features at creation.** ``run_create`` stores ``run_features`` on every run: the model
  (score, log parameters, latency, teacher gap, genome kind), the strategy, the task's output
  kind, the five hormone levels and the recent gains of that strategy on that model — what
  was known when the run was chosen (``improvement.nn.gain_model.run_feature_names``).
* **A task of its own.** Finished runs with a measured gain (promoted or rejected) form the
  dataset of the ``improvement-predictor`` task (output ``values``: the gain clipped to
  [−1, 1]). Its splits are chronological by finish time: the newest 15 % of runs are the
  held-out test split, so a score says how well the past predicts the future. The algorithmic
  implementation is the baseline ``MeanGainPerStrategy``; the neural model ``gain-mlp`` is a
  NeuralModel like any other, which the same loop retrains, evolves and distils — networks
  improving the networks that improve networks.
* **A growing dataset.** Once ``predictor_min_history`` runs exist the task is created (CSV
  upload of the history, then ``task_dataset_replace`` with the chronological splits) and a
  first neural version is trained. Later, when at least ``max(5, 10 %)`` more runs have
  finished, the dataset is replaced with the whole history and the algorithm and every active
  version are re-evaluated on the new test split, so the comparison below is on current data.
* **Used only while it beats the baseline.** The neural predictor ranks runs only when the
  latest held-out score of the task's best active version is strictly above the algorithm's —
  the serving comparison, on the same test split. Otherwise the baseline ranks them and the
  cycle's notes say why (too little history, the scores, a failure).

The ranking itself is in ``improvement.scheduler.cycle``: priority × (1 + predicted gain clipped to
[−0.5, 1]).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, cast

import numpy as np
from django.db.models import Q

from hormones.names import HORMONE_NAMES
from hormones.selectors import hormone_levels_current
from improvement.choices import RunStatus
from improvement.models import ImprovementConfig, ImprovementRun, SearchCandidate
from improvement.nn.gain_model import (
    FEATURES_VERSION,
    GAIN_RANGE,
    GenomeObservation,
    MeanGainPerStrategy,
    chronological_splits,
    clip_gain,
    n_run_features,
    run_feature_matrix,
    run_feature_names,
    run_predictor_genome,
    splits_are_chronological,
)
from improvement.strategies.registry import strategy_names
from models_registry.choices import Implementation, SampleSource
from models_registry.errors import RegistryError
from models_registry.evaluation import algorithm_evaluate, candidate_evaluate, version_rescore
from models_registry.implementations import algorithm_for_task, task_dataset, version_predict_fn
from models_registry.models import ModelVersion, NeuralModel, PerformanceSample, Task
from models_registry.nn.genome import KINDS
from models_registry.nn.kinds import OUTPUT_KINDS
from models_registry.nn.training import TrainConfig
from models_registry.sealed import deciding
from models_registry.selectors import (
    algorithm_latest_sample,
    teacher_score,
    version_active,
    version_best_in_task,
    version_latest_sample,
)
from models_registry.services import (
    MIN_GATE_ROWS,
    MIN_TASK_ROWS,
    model_create,
    task_create_from_upload,
    task_dataset_replace,
    version_create,
)
from models_registry.serving.switching import serving_reevaluate
from models_registry.training import neural_fit

logger = logging.getLogger(__name__)

PREDICTOR_TASK_SLUG = "improvement-predictor"
PREDICTOR_MODEL_NAME = "gain-mlp"
BASELINE_PATH = "improvement.nn.gain_model.MeanGainPerStrategy"
BASELINE_LABEL = "mean gain per strategy"
REFRESH_MIN_NEW_RUNS = 5
REFRESH_GROWTH = 0.1
SEED_TRAIN = TrainConfig(epochs=300, batch_size=32, lr=3e-3, patience=30, seed=0)
HISTORY_MARKER = "history_through"  # in the algorithm's evaluation sample: the newest run the dataset holds
RECENT_GAINS = 3


# ----------------------------------------------------------------------------------- features


def run_features(*, model: NeuralModel, strategy: str, levels: dict[str, float] | None = None) -> dict:
    """What the predictor may know about a run when it is created (named as ``run_feature_names()``)."""
    levels = hormone_levels_current() if levels is None else levels
    active = version_active(model=model)
    score = float(active.score) if active is not None and active.score is not None else 0.0
    params = active.n_parameters if active is not None and active.n_parameters else 0
    p95 = active.latency_p95_ms if active is not None and active.latency_p95_ms else None
    budget = model.task.latency_budget_ms or 200.0
    teacher = teacher_score(model=model)
    kind = (active.genome or {}).get("kind") if active is not None else None
    finished = ImprovementRun.objects.filter(model=model, strategy=strategy, finished_at__isnull=False)
    # gain__isnull=False: no gain is None
    gains = [clip_gain(cast(float, g)) for g in finished.filter(status__in=(RunStatus.PROMOTED, RunStatus.REJECTED),
                                                                gain__isnull=False)
             .order_by("-finished_at", "-id").values_list("gain", flat=True)[:RECENT_GAINS]]
    features = {
        "v": FEATURES_VERSION,
        "score": score,
        "log_params": math.log10(1 + params),
        "log_latency_ms": min(4.0, max(-3.0, math.log10(p95))) if p95 else 0.0,
        "latency_over_budget": min(10.0, p95 / budget) if p95 else 0.0,
        "teacher_gap": min(1.0, max(-1.0, teacher - score)) if teacher is not None else 0.0,
        **{f"kind_{k}": float(kind == k) for k in KINDS},
        **{f"strategy_{s}": float(strategy == s) for s in strategy_names()},
        **{f"output_{k}": float(model.task.output_kind == k) for k in OUTPUT_KINDS},
        **{h: float(min(1.0, max(0.0, levels.get(h, 0.0)))) for h in HORMONE_NAMES},
        "prev_gain_mean": float(np.mean(gains)) if gains else 0.0,
        "prev_gain_last": gains[0] if gains else 0.0,
        "prev_runs": math.log1p(finished.count()),
    }
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in features.items()}


# ------------------------------------------------------------------------------------ history


@dataclasses.dataclass(frozen=True)
class History:
    """Finished runs with a measured gain and features of the current layout, oldest finish first."""

    run_ids: list[int]
    X: np.ndarray  # (N, n_run_features())
    y: np.ndarray  # (N, 1), clipped gains
    newest_finished_at: str | None

    def __len__(self) -> int:
        return len(self.run_ids)


def history_load() -> History:
    rows = [r for r in ImprovementRun.objects.filter(
        status__in=(RunStatus.PROMOTED, RunStatus.REJECTED), gain__isnull=False, finished_at__isnull=False,
    ).order_by("finished_at", "id").values("id", "features", "gain", "finished_at")
        if isinstance(r["features"], dict) and r["features"].get("v") == FEATURES_VERSION]
    # gain__isnull=False and finished_at__isnull=False: neither is None
    y = np.array([clip_gain(cast(float, r["gain"])) for r in rows], dtype=np.float32).reshape(-1, 1)
    newest = cast(datetime, rows[-1]["finished_at"]).isoformat() if rows else None
    return History([r["id"] for r in rows], run_feature_matrix([r["features"] for r in rows]), y, newest)


def _history_csv(history: History) -> bytes:
    lines = [",".join([*run_feature_names(), "gain"])]
    lines += [",".join(f"{v:.9g}" for v in [*x, y[0]]) for x, y in zip(history.X, history.y, strict=True)]
    return ("\n".join(lines) + "\n").encode()


# ---------------------------------------------------------------------------- the registered task


def predictor_task() -> Task | None:
    return Task.objects.filter(slug=PREDICTOR_TASK_SLUG).first()


def _marker_sample(task: Task) -> PerformanceSample | None:
    return (PerformanceSample.objects.filter(task=task, implementation=Implementation.ALGORITHMIC,
                                             source=SampleSource.EVALUATION, extra__has_key=HISTORY_MARKER)
            .order_by("-created_at", "-id").first())


def _evaluate_on_current_split(task: Task, history: History) -> None:
    """The algorithm (with the history marker) and every active version, on the task's current splits.

    The gate scores are what the predictor check compares; the sealed test scores are recorded
    for reports. Active versions are re-measured (``version_rescore``): the splits changed under them.
    """
    algorithm_evaluate(task=task, extra={HISTORY_MARKER: history.newest_finished_at, "runs": len(history)})
    for version in ModelVersion.objects.filter(model__task=task, is_active=True).select_related("model__task"):
        version_rescore(version=version)


def _serving_follow(task: Task) -> None:
    try:
        serving_reevaluate(task=task)
    except Exception:  # noqa: BLE001 - serving re-decides on its own at the next activation
        logger.exception("serving re-evaluation of %s after a dataset refresh failed", task.slug)


def predictor_task_create(history: History) -> Task:
    """Create the task from the history (chronological splits), its algorithm sample and a first neural version."""
    description = ("Predict the gain of an improvement run from the model, strategy, task and hormone state at "
                   "its creation. Built from Plasticity's own run history and refreshed as it grows; the "
                   "newest runs are the held-out test split. Algorithmic implementation: mean gain per strategy.")
    try:
        task = task_create_from_upload(
            name="Improvement predictor", slug=PREDICTOR_TASK_SLUG, filename="run-history.csv",
            content=_history_csv(history), description=description, target_column="gain", output_kind="values",
            algorithm_path=BASELINE_PATH,
        )
    except RegistryError:
        existing = predictor_task()  # created meanwhile by another process
        if existing is None:
            raise
        return existing
    task_dataset_replace(task=task, X=history.X, y=history.y, splits=chronological_splits(len(history)))
    _evaluate_on_current_split(task, history)
    predictor_neural_seed(task)
    return task


def predictor_neural_seed(task: Task) -> ModelVersion | None:
    """Give the task its neural model and a first version trained on the history, if it has none."""
    model = NeuralModel.objects.filter(task=task, name=PREDICTOR_MODEL_NAME).first()
    if model is None:
        try:
            model = model_create(task=task, name=PREDICTOR_MODEL_NAME,
                                 description="Neural improvement predictor; the loop improves it like any model.")
        except RegistryError:  # created meanwhile by another process
            return None
    if model.versions.exists():
        return None
    genome = run_predictor_genome()
    module, _ = neural_fit(task, genome, config=SEED_TRAIN)
    evaluation = candidate_evaluate(task=task, module=module)
    return version_create(model=model, genome=genome, state_dict=module.state_dict(), evaluation=evaluation,
                          activate=True, note="trained on the run history", reason="initial version")


def predictor_refresh(history: History) -> tuple[Task, str]:
    """Create the task, or replace its dataset when the history grew enough. Returns (task, what was done)."""
    task = predictor_task()
    if task is None:
        task = predictor_task_create(history)
        return task, f"created from {len(history)} runs"
    if list(task.input_shape) != [n_run_features()]:
        raise RegistryError(f"the task's inputs {task.input_shape} do not match the {n_run_features()} run features "
                            "(the registered strategies changed)")
    seeded = predictor_neural_seed(task)  # a creation interrupted before its first version
    marker = _marker_sample(task)
    through = (marker.extra or {}).get(HISTORY_MARKER) if marker is not None else None
    new_runs = len(history) if through is None else ImprovementRun.objects.filter(
        pk__in=history.run_ids, finished_at__gt=through).count()
    stale = not splits_are_chronological(task_dataset(task).splits)
    if not stale and new_runs < max(REFRESH_MIN_NEW_RUNS, math.ceil(REFRESH_GROWTH * task.n_samples)):
        return task, f"first neural version trained ({seeded})" if seeded else ""
    task_dataset_replace(task=task, X=history.X, y=history.y, splits=chronological_splits(len(history)))
    _evaluate_on_current_split(task, history)
    _serving_follow(task)
    return task, f"dataset refreshed: {len(history)} runs ({new_runs} new)"


# ----------------------------------------------------------------------------------- prediction


@dataclasses.dataclass
class GainPredictor:
    """Predicts the gain of candidate runs from their ``run_features``; says which model and why."""

    label: str  # shown in each decision: "neural gain-mlp v3" or "mean gain per strategy"
    neural: bool
    note: str  # the cycle's note
    predict_fn: Callable[[np.ndarray], np.ndarray]

    def predict(self, rows: list[dict]) -> list[float]:
        X = run_feature_matrix(rows)
        out = np.asarray(self.predict_fn(X), dtype=np.float64).reshape(len(rows), -1)[:, 0]
        if not np.isfinite(out).all():
            raise ValueError("the predictor produced non-finite gains")
        return [float(v) for v in np.clip(out, *GAIN_RANGE)]


def _baseline(history: History, note: str) -> GainPredictor:
    fitted = MeanGainPerStrategy().fit(history.X, history.y)
    return GainPredictor(BASELINE_LABEL, False, f"predictor: fallback to {BASELINE_LABEL} — {note}", fitted.predict)


def _choose(task: Task, refreshed: str) -> GainPredictor:
    algorithm = algorithm_for_task(task)

    def fallback(reason: str) -> GainPredictor:
        return GainPredictor(BASELINE_LABEL, False, f"predictor: fallback to {BASELINE_LABEL} — {reason}"
                             + (f" ({refreshed})" if refreshed else ""), algorithm.predict)

    version = version_best_in_task(task=task)
    if version is None:
        return fallback("no active neural version")
    algo_sample = algorithm_latest_sample(task=task)
    neural_sample = version_latest_sample(version=version)
    neural = neural_sample.score if neural_sample is not None else None
    base = algo_sample.score if algo_sample is not None else None
    where = f"on the {task.n_gate} gate runs (the newest before the sealed ones)"
    if neural is None or base is None:
        return fallback(f"no held-out {'neural' if neural is None else 'baseline'} score yet")
    if not neural > base:
        return fallback(f"neural R² {neural:.2f} ≤ baseline {base:.2f} {where}")
    label = f"neural {version.model.name} v{version.number}"
    note = f"predictor: {label} — R² {neural:.2f} > baseline {base:.2f} {where}"
    return GainPredictor(label, True, note + (f" ({refreshed})" if refreshed else ""), version_predict_fn(version))


def history_minimum(config: ImprovementConfig) -> int:
    """Finished runs needed before the predictor task is created and may rank runs.

    The configured ``predictor_min_history``, and never fewer than any task needs: one row per run,
    and a gate split of at least ``MIN_GATE_ROWS`` rows.
    """
    return max(config.predictor_min_history, MIN_TASK_ROWS)


def history_shortfall(n: int, config: ImprovementConfig) -> str:
    """Why ``n`` finished runs are not enough yet, or "" when they are."""
    minimum = history_minimum(config)
    if n >= minimum:
        return ""
    why = "" if minimum == config.predictor_min_history else f" (its gate split needs {MIN_GATE_ROWS} rows)"
    return f"not enough history: {n} < {minimum} runs{why}"


def predictor_maintain(*, config: ImprovementConfig | None = None) -> str:
    """Create the predictor task, or refresh its data, when the history allows; returns what was done.

    Maintenance, not a decision: it trains and records versions (and their sealed test scores),
    so the cycle calls it before it starts deciding. Never raises.
    """
    config = config or ImprovementConfig.load()
    history = history_load()
    if history_shortfall(len(history), config):
        return ""
    try:
        return predictor_refresh(history)[1]
    except RegistryError as exc:  # refused with a reason (the data, a concurrent change): no traceback
        logger.warning("refreshing the improvement predictor was refused: %s", exc)
        return f"refresh refused ({exc})"[:200]
    except Exception as exc:  # noqa: BLE001 - ranking must go on; gain_predictor falls back and says why
        logger.exception("refreshing the improvement predictor failed")
        return f"refresh failed ({type(exc).__name__}: {exc})"[:200]


def gain_predictor(*, config: ImprovementConfig | None = None, refreshed: str | None = None) -> GainPredictor:
    """The predictor the cycle uses now: the neural model when it beats the baseline on the gate runs.

    A decision (``deciding("predictor check")``): it compares gate scores, never the sealed ones.
    ``refreshed`` None: maintain the predictor task first (``predictor_maintain``); the cycle does
    that itself before it starts deciding and passes what was done.
    """
    config = config or ImprovementConfig.load()
    if refreshed is None:
        refreshed = predictor_maintain(config=config)
    history = history_load()
    shortfall = history_shortfall(len(history), config)
    if shortfall:
        return _baseline(history, shortfall)
    task = predictor_task()
    if task is None:
        return _baseline(history, "the predictor task is not created yet" + (f" ({refreshed})" if refreshed else ""))
    try:
        with deciding("predictor check"):
            return _choose(task, refreshed)
    except Exception as exc:  # noqa: BLE001 - ranking must go on; the note says what broke
        logger.exception("the improvement predictor is unavailable")
        return _baseline(history, f"the predictor is unavailable ({type(exc).__name__}: {exc})"[:300])


def gain_predictions(rows: list[dict], *, config: ImprovementConfig | None = None,
                     refreshed: str | None = None) -> tuple[list[float], str, str]:
    """(predicted gains, predictor label, note) for runs described by ``rows``; never raises."""
    predictor = gain_predictor(config=config, refreshed=refreshed)
    try:
        return predictor.predict(rows), predictor.label, predictor.note
    except Exception as exc:  # noqa: BLE001
        logger.exception("the %s predictor failed", predictor.label)
        fallback = _baseline(history_load(), f"{predictor.label} failed ({type(exc).__name__}: {exc})"[:300])
        return fallback.predict(rows), fallback.label, fallback.note


# --------------------------------------------------------------------------------- genome level


GENOME_HISTORY_LIMIT = 2000


def genome_history(*, task: Task, exclude_run_id: int | None = None) -> list[GenomeObservation]:
    """Trained candidates of earlier searches on ``task``: (parent, genome, score − parent's score), oldest first.

    A search's first candidate is its parent retrained the same way, so the difference is
    what the architecture change bought; searches without it are skipped.
    """
    rows = list(SearchCandidate.objects.filter(
        run__model__task=task, status=SearchCandidate.Status.DONE, score__isnull=False,
    ).exclude(Q(run_id=exclude_run_id) if exclude_run_id else Q(pk__in=[]))
        .order_by("-run_id", "index").values("run_id", "index", "genome", "score")[:GENOME_HISTORY_LIMIT])
    by_run: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_run.setdefault(row["run_id"], []).append(row)
    observations = []
    for run_id in sorted(by_run):
        candidates = by_run[run_id]
        parent = next((c for c in candidates if c["index"] == 0), None)
        if parent is None:
            continue
        observations += [GenomeObservation(parent["genome"], c["genome"], float(c["score"]) - float(parent["score"]))
                         for c in candidates if c["index"] != 0]
    return observations


__all__ = ["GainPredictor", "History", "gain_predictions", "gain_predictor", "genome_history", "history_load",
           "predictor_neural_seed", "predictor_refresh", "predictor_task", "predictor_task_create", "run_features"]
