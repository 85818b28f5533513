"""Input drift end to end: requests until a shift is detected, false alarms, and retraining without forgetting.

A generated table (six features, two classes, labels drawn from a logistic of a boundary that turns
with feature ``f2``: Bayes accuracy ≈ 0.895, so nothing sits at the ceiling) is uploaded through the
product's services (``task_create_from_upload``, a CSV of ``N_OLD`` rows); its first model is made
by the product's bootstrap (``task_first_model`` then ``model_bootstrap``, what the worker runs) and
is served neural (pinned, so the shadow checks cannot move serving to the algorithm meanwhile).

* **Detection.** Single-row predict requests through the real predict API (DRF ``APIClient``, an
  authenticated user): ``PRE_SHIFT`` from the old distribution, then rows from the new one (``f2``
  +4 sd, which turns the boundary from ``f0`` to ``f1``, and ``f3`` +1 sd). Every ``FLUSH_EVERY``
  requests the tracker is flushed and ``loop_tick`` runs (it checks drift on every tick):
  ``FLUSH_EVERY`` = 100 stands for the tracker's 10 s flush at about 10 requests/s.
  ``detection_requests`` is the number of shifted requests answered before the tick that recorded
  the ``InputDrift`` (so a multiple of ``FLUSH_EVERY``); the genetic trigger it fires is checked
  (``genetic_trigger_detect``: kind drift, source inputs).
* **False alarms.** The pre-shift ticks are unshifted checks end to end (reported beside). The
  rate is measured with the detector the tick calls (``drift_detect_recent`` against the task's
  own reference, ``drift_reference_for``, with the configuration's thresholds) on ``NULL_WINDOWS``
  fresh, independent unshifted windows of ``drift_window_rows`` rows per seed: alarms per window.
* **Recovery.** ``N_NEW`` labelled rows of the new distribution are appended
  (``task_rows_append``); one training run (the retraining strategy, which the drift's adrenaline
  puts first) goes through ``run_execute``: trained on old and new rows together, judged by the
  gate and the rehearsal rule. The active version before and after is scored on the sealed test
  rows of the appended version (new distribution) and on the old rows' sealed test rows, read
  through ``TaskDataset.sealed_test`` outside any decision (the reporting path). The same scores
  on ``POPULATION`` fresh rows of each distribution are reported beside (less sampling noise).

Each seed runs in its own subprocess on a fresh SQLite database in a temporary folder
(``python -m bench.bench_drift --driver SEED``), so this process never configures Django.
Targets (issue 19): drift detected within 2,000 requests on every seed; the retrained model
recovers at least half of the score the shift cost (mean over seeds); it loses no more than
``forgetting_tolerance`` on the old distribution's sealed rows (mean over seeds).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import embedded_env, target

NAME = "drift"
DESCRIPTION = "input drift: predict requests until detection, false alarms, recovery after retraining"

REPO = Path(__file__).resolve().parent.parent
SEEDS = tuple(int(v) for v in os.environ.get("BENCH_DRIFT_SEEDS", "0,1,2,3,4").split(","))
N_OLD = 3000  # rows of the upload (old distribution)
N_NEW = 3000  # rows appended (new distribution)
N_FEATURES = 6
SHIFT = {2: 4.0, 3: 1.0}  # feature → mean shift in standard deviations
LABEL_SLOPE = 5.0  # P(b) = sigmoid(slope · signed distance to the boundary): Bayes accuracy ≈ 0.895
PRE_SHIFT = 2000  # unshifted requests before the shift (fills the drift window)
MAX_AFTER = 4000  # shifted requests before giving up
FLUSH_EVERY = 100  # requests per tracker flush and loop tick
NULL_WINDOWS = int(os.environ.get("BENCH_DRIFT_NULL_WINDOWS", "1000"))  # per seed
POPULATION = 20_000  # fresh rows per distribution, for the low-noise scores
RUN_PARAMS = {"time_budget_s": 30, "epochs": 60}
DETECT_WITHIN = 2000
RECOVER_AT_LEAST = 0.5
DRIVER_TIMEOUT_S = 600


# ------------------------------------------------------------------------------ the data


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _rows(rng: np.random.Generator, n: int, *, shifted: bool) -> tuple[np.ndarray, np.ndarray]:
    """(X, y): y = 1 ("b") with probability sigmoid(slope · s), s the signed distance to a boundary that
    turns from f0 (f2 ≈ 0, the old inputs) to f1 (f2 ≈ 4, the shifted ones)."""
    X = rng.normal(size=(n, N_FEATURES))
    if shifted:
        for feature, shift in SHIFT.items():
            X[:, feature] += shift
    theta = (math.pi / 2) * _sigmoid(2.5 * (X[:, 2] - 2.0))
    s = X[:, 0] * np.cos(theta) + X[:, 1] * np.sin(theta)
    y = (rng.random(n) < _sigmoid(LABEL_SLOPE * s)).astype(np.int64)
    return X.round(5).astype(np.float32), y


def _csv(X: np.ndarray, y: np.ndarray) -> bytes:
    lines = [",".join([f"f{i}" for i in range(N_FEATURES)] + ["label"])]
    lines += [",".join(f"{v:.5f}" for v in row) + (",b" if label else ",a") for row, label in zip(X, y, strict=True)]
    return ("\n".join(lines) + "\n").encode()


# ------------------------------------------------------------------------------ the harness


def run() -> dict[str, Any]:
    seeds = []
    for seed in SEEDS:
        with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
            var_dir = Path(tmp)
            # The tracker flushes when the benchmark says (every FLUSH_EVERY requests), inline.
            env = embedded_env(var_dir, PLASTICITY_SERVING_BACKGROUND="0", PLASTICITY_TRACKER_FLUSH_S="86400",
                               LOG_LEVEL="ERROR")
            done = subprocess.run([sys.executable, "-m", "bench.bench_drift", "--driver", str(seed)], cwd=REPO,
                                  env=env, capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S)
            if done.returncode != 0:
                raise RuntimeError(f"driver for seed {seed} failed ({done.returncode}):\n{done.stderr[-4000:]}")
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            seeds.append(json.loads(lines[-1]))
    return _report(seeds)


def _summary(values: list[float | None]) -> dict[str, Any]:
    known = [v for v in values if v is not None]
    return {"mean": round(statistics.fmean(known), 4) if known else None,
            "min": round(min(known), 4) if known else None, "max": round(max(known), 4) if known else None,
            "per_seed": values}


def _report(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    tolerance = seeds[0]["config"]["forgetting_tolerance"]
    detection = [s["detection_requests"] for s in seeds]
    alarms = sum(s["null_alarms"] for s in seeds)
    windows = sum(s["null_windows"] for s in seeds)
    recovered = [s["recovered_fraction"] for s in seeds]
    old_change = [s["old_score_change"] for s in seeds]
    false_alarm = {"mean": round(alarms / windows, 5), "min": min(s["null_alarms"] / s["null_windows"] for s in seeds),
                   "max": max(s["null_alarms"] / s["null_windows"] for s in seeds),
                   "per_seed": [s["null_alarms"] / s["null_windows"] for s in seeds], "alarms": alarms,
                   "windows": windows, "wilson95_high": round(_wilson_high(alarms, windows), 5)}
    detected_all = all(d is not None for d in detection)
    worst = max((d for d in detection if d is not None), default=None)
    mean_recovered = _summary(recovered)["mean"]
    mean_old = _summary(old_change)["mean"]
    targets = [
        target(f"drift detected within {DETECT_WITHIN:,} predict requests after the shift (worst seed)",
               f"<= {DETECT_WITHIN:,} on every seed", worst if detected_all else None,
               detected_all and worst is not None and worst <= DETECT_WITHIN),
        target("share of the score lost to the shift that retraining recovers (mean over seeds; min "
               f"{_summary(recovered)['min']})", f">= {RECOVER_AT_LEAST}", mean_recovered,
               mean_recovered is not None and mean_recovered >= RECOVER_AT_LEAST),
        target(f"score change on the old distribution's sealed rows (mean over seeds; min {_summary(old_change)['min']})",
               f">= -{tolerance:g} (forgetting_tolerance)", mean_old, mean_old is not None and mean_old >= -tolerance),
    ]
    table = [{
        "seed": s["seed"], "detection_requests": s["detection_requests"], "psi_max": s["drift"]["psi_max"],
        "moved": ",".join(s["drift"]["features"]), "trigger": s["trigger"]["kind"],
        "e2e_false_alarms": f"{s['e2e_alarms']}/{s['e2e_checks']}",
        "null_alarms": f"{s['null_alarms']}/{s['null_windows']}",
        "old_before": s["scores"]["before"]["old"], "new_before": s["scores"]["before"]["new"],
        "run": s["run"]["status"], "new_after": s["scores"]["after"]["new"], "old_after": s["scores"]["after"]["old"],
        "recovered": s["recovered_fraction"], "old_change": s["old_score_change"],
        "old_change_ci95": s["old_change_ci95"], "seconds": s["timing"]["total_s"],
    } for s in seeds]
    population = [{
        "seed": s["seed"], "old_before": s["population"]["before"]["old"], "new_before": s["population"]["before"]["new"],
        "new_after": s["population"]["after"]["new"], "old_after": s["population"]["after"]["old"],
        "old_change": round(s["population"]["after"]["old"] - s["population"]["before"]["old"], 4),
    } for s in seeds]
    return {
        "table": table,
        "tables": {f"the same versions on {POPULATION:,} fresh rows of each distribution": population},
        "targets": targets,
        "detection_requests": _summary(detection),
        "false_alarm_rate": false_alarm,
        "score_before": _summary([s["scores"]["before"]["new"] for s in seeds]),
        "score_after": _summary([s["scores"]["after"]["new"] for s in seeds]),
        "old_score_change": _summary(old_change),
        "score_before_old": _summary([s["scores"]["before"]["old"] for s in seeds]),
        "recovered_fraction": _summary(recovered),
        "seeds": seeds,
        "config": {
            "seeds": list(SEEDS), "n_old": N_OLD, "n_new": N_NEW, "features": N_FEATURES,
            "shift_sd": {f"f{k}": v for k, v in SHIFT.items()}, "label_slope": LABEL_SLOPE,
            "pre_shift_requests": PRE_SHIFT, "max_shifted_requests": MAX_AFTER, "flush_every_requests": FLUSH_EVERY,
            "null_windows_per_seed": NULL_WINDOWS, "population_rows": POPULATION, "run_params": RUN_PARAMS,
            **seeds[0]["config"],
        },
        "timing": {"per_seed_s": [s["timing"] for s in seeds]},
        "notes": [
            f"task: {N_OLD:,} uploaded rows, 6 features, 2 classes, labels from a logistic (slope {LABEL_SLOPE:g}) of a "
            "boundary that turns from f0 to f1 as f2 grows (Bayes accuracy about 0.895); the shift moves f2 by +4 sd "
            f"and f3 by +1 sd; {N_NEW:,} rows of the new distribution appended for the retraining",
            f"detection: {PRE_SHIFT:,} unshifted then up to {MAX_AFTER:,} shifted single-row predict requests through "
            f"the predict API (DRF APIClient, in process); every {FLUSH_EVERY} requests a tracker flush and loop_tick "
            "(the tracker's 10 s flush at about 10 requests/s), so detection_requests is a multiple of "
            f"{FLUSH_EVERY}; the configuration's drift thresholds are the defaults (see config)",
            f"false_alarm_rate: alarms per unshifted window of drift_window_rows rows, the tick's detector "
            f"(drift_detect_recent: the whole window and its newest drift_min_rows rows) against the task's own "
            f"reference, {NULL_WINDOWS} fresh windows per seed ({windows} in all); wilson95_high is the upper end of "
            "the pooled rate's 95 % interval. e2e_false_alarms: alarms at the pre-shift ticks that had at least "
            "drift_min_rows rows (overlapping windows, not independent)",
            "recovered = (new_after − new_before) / (old_before − new_before): the share of the score lost to the "
            "shift (the first version on its own distribution vs on the new one) won back on the new distribution",
            "scores: the task's metric on the sealed test rows, read outside any decision (TaskDataset.sealed_test, "
            "the reporting path); new = rows of the appended dataset version, old = the upload's; old_change_ci95 "
            "is a paired bootstrap interval over the old sealed rows",
            f"retraining: one run of the training strategy ({RUN_PARAMS}) through run_execute, judged by the gate "
            "and the rehearsal rule (old and new gate rows apart); the run's time budget is wall clock, so a loaded "
            "machine can train fewer epochs, and runs of the same seed need not match to the last row",
            "each seed: its own subprocess and fresh SQLite database; serving pinned to neural; one torch thread",
        ],
    }


def _wilson_high(k: int, n: int, z: float = 1.959964) -> float:
    if n <= 0:
        return 1.0
    p = k / n
    denominator = 1 + z * z / n
    return min(1.0, (p + z * z / (2 * n) + z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / denominator)


# ------------------------------------------------------------------------------ the driver (Django)


def _driver(seed: int) -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from improvement.models import ImprovementConfig
    from improvement.services import model_bootstrap, task_first_model
    from models_registry.selectors import version_active
    from models_registry.services import task_create_from_upload
    from models_registry.serving.choices import SwitchReason
    from models_registry.serving.models import ServingState
    from models_registry.serving.switching import NEURAL, serving_switch

    timing: dict[str, float] = {}
    started = t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timing[f"{name}_s"] = round(now - t, 2)
        t = now

    call_command("migrate", verbosity=0)
    config = ImprovementConfig.load()
    lap("migrate")

    # One generator per phase: the rows uploaded, streamed and appended do not depend on NULL_WINDOWS.
    upload_rng, stream_rng, null_rng, append_rng = (np.random.default_rng(s)
                                                    for s in np.random.SeedSequence(1000 + seed).spawn(4))
    X_old, y_old = _rows(upload_rng, N_OLD, shifted=False)
    task = task_create_from_upload(name=f"drifting-{seed}", filename="old.csv", content=_csv(X_old, y_old), seed=seed)
    model = task_first_model(task=task)
    assert model is not None
    model_bootstrap(model=model)
    first = version_active(model=model)
    assert first is not None
    chosen = ServingState.objects.filter(task=task).values_list("implementation", flat=True).first()
    serving_switch(task=task, implementation=NEURAL, version=first, reason=SwitchReason.OPERATOR,
                   detail="benchmark: serve the neural version", actor="bench", pinned=True)
    lap("create_and_bootstrap")

    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("bench", password="bench-pass-123"))
    stream = _detect(client, task, model, config, stream_rng)
    lap("stream")

    null_alarms = _null_windows(task, config, null_rng)
    lap("null_windows")

    recovery = _recover(task, model, first, config, append_rng, seed)
    lap("recovery")
    timing["total_s"] = round(time.perf_counter() - started, 1)

    print(json.dumps({
        "seed": seed, **stream, "null_alarms": null_alarms, "null_windows": NULL_WINDOWS, **recovery,
        "first_version": {"genome": first.genome, "gate_score": first.score, "serving_chosen": chosen},
        "timing": timing,
        "config": {"drift_psi_threshold": config.drift_psi_threshold, "drift_min_rows": config.drift_min_rows,
                   "drift_window_rows": config.drift_window_rows, "drift_cooldown_s": config.drift_cooldown_s,
                   "forgetting_tolerance": config.forgetting_tolerance, "metric": task.metric},
    }, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer | np.floating):
        return value.item()
    raise TypeError(type(value).__name__)


def _detect(client, task, model, config, rng: np.random.Generator) -> dict[str, Any]:
    """Stream old then shifted rows through the predict API; a flush and a tick every FLUSH_EVERY requests."""
    from improvement.scheduler.genetic_triggers import genetic_trigger_detect
    from improvement.scheduler.loop import loop_tick
    from models_registry.serving.models import InputDrift, InputSample
    from models_registry.serving.tracker import serving_tracker

    def predict(X: np.ndarray) -> None:
        for row in X.tolist():
            answer = client.post(f"/api/tasks/{task.slug}/predict", {"inputs": [row]}, format="json")
            if answer.status_code != 200:
                raise RuntimeError(f"predict answered {answer.status_code}: {answer.content[:300]!r}")

    def tick() -> tuple[list[int], bool]:
        serving_tracker().flush()
        rows = sum(InputSample.objects.filter(task=task).values_list("rows", flat=True))
        return loop_tick()["input_drifts"], rows >= config.drift_min_rows

    e2e_alarms = e2e_checks = 0
    request_s: list[float] = []
    for _ in range(PRE_SHIFT // FLUSH_EVERY):
        X, _y = _rows(rng, FLUSH_EVERY, shifted=False)
        t0 = time.perf_counter()
        predict(X)
        request_s.append((time.perf_counter() - t0) / FLUSH_EVERY)
        drifts, checked = tick()
        e2e_alarms += bool(drifts)
        e2e_checks += checked
    detection = drift = None
    sent = 0
    while sent < MAX_AFTER:
        X, _y = _rows(rng, FLUSH_EVERY, shifted=True)
        predict(X)
        sent += FLUSH_EVERY
        drifts, _checked = tick()
        if drifts:
            detection, drift = sent, InputDrift.objects.get(pk=drifts[0])
            break
    fired = genetic_trigger_detect(model, config=config)
    return {
        "detection_requests": detection,
        "drift": {"id": drift.pk if drift else None, "psi_max": round(drift.psi_max, 4) if drift else None,
                  "rows": drift.rows if drift else None,
                  "features": [f["feature"] for f in drift.evidence["features"]] if drift else []},
        "trigger": {"kind": fired[0] if fired else None,
                    "source": fired[1].get("source") if fired else None},
        "e2e_alarms": e2e_alarms, "e2e_checks": e2e_checks,
        "predict_ms_mean": round(1000 * statistics.fmean(request_s), 2),
    }


def _null_windows(task, config, rng: np.random.Generator) -> int:
    """Alarms of the tick's detector on NULL_WINDOWS fresh unshifted windows, against the task's reference."""
    from models_registry.serving.drift import drift_detect_recent
    from models_registry.serving.input_drift import drift_reference_for

    reference = drift_reference_for(task)
    alarms = 0
    for _ in range(NULL_WINDOWS):
        X, _y = _rows(rng, config.drift_window_rows, shifted=False)
        alarms += drift_detect_recent(reference, X, threshold=config.drift_psi_threshold,
                                      min_rows=config.drift_min_rows).drifted
    return alarms


def _recover(task, model, first, config, rng: np.random.Generator, seed: int) -> dict[str, Any]:
    """Append new-distribution rows, run one training run through run_execute, score before and after."""
    from improvement.choices import RunOrigin
    from improvement.runs.execution import run_execute
    from improvement.runs.lifecycle import run_create
    from models_registry.dataset_versions import task_rows_append
    from models_registry.implementations import task_dataset, version_predict_fn
    from models_registry.nn.metrics import Predictions, metric_score, predictions_from_raw
    from models_registry.nn.significance import paired_bootstrap
    from models_registry.selectors import version_active
    from models_registry.serving.models import InputDrift

    X_new, y_new = _rows(rng, N_NEW, shifted=True)
    version, _created = task_rows_append(task=task, filename="new.csv", content=_csv(X_new, y_new))
    task.refresh_from_db()
    dataset = task_dataset(task)
    X_test, y_test = dataset.sealed_test()  # reporting: outside any decision
    old_rows = dataset.splits["test"] < N_OLD
    population_rng = np.random.default_rng(424242 + seed)
    population = {"old": _rows(population_rng, POPULATION, shifted=False),
                  "new": _rows(population_rng, POPULATION, shifted=True)}

    def predictions(v, X: np.ndarray):
        return predictions_from_raw(task.output_kind, version_predict_fn(v)(X))

    def part(p, rows: np.ndarray):
        return Predictions(p.values[rows], None if p.scores is None else p.scores[rows])

    def scores(v) -> tuple[dict[str, float], dict[str, float], Any]:
        p = predictions(v, X_test)
        sealed = {"old": metric_score(task.metric, y_test[old_rows], part(p, old_rows)),
                  "new": metric_score(task.metric, y_test[~old_rows], part(p, ~old_rows))}
        fresh = {part: metric_score(task.metric, y, predictions(v, X)) for part, (X, y) in population.items()}
        return ({k: round(float(s), 4) for k, s in sealed.items()}, {k: round(float(s), 4) for k, s in fresh.items()},
                p)

    before, population_before, p_before = scores(first)
    drift = InputDrift.objects.filter(task=task).order_by("-id").first()
    reason = (f"input drift #{drift.pk}: PSI {drift.psi_max:.3f}; dataset v{version.number} appended"
              if drift else f"dataset v{version.number} appended")
    run = run_create(model=model, strategy="training", origin=RunOrigin.LOOP, trigger_reason=reason,
                     params=dict(RUN_PARAMS), enqueue=False)
    status = run_execute(run_id=run.pk)
    run.refresh_from_db()
    active = version_active(model=model)
    after, population_after, p_after = scores(active)
    change = paired_bootstrap(task.metric, y_test[old_rows], part(p_before, old_rows), part(p_after, old_rows),
                              n_boot=2000)
    lost = before["old"] - before["new"]
    rehearsal = ((run.candidate_metrics or {}).get("gate_test") or {}).get("rehearsal")
    return {
        "scores": {"before": before, "after": after,
                   "sealed_rows": {"old": int(old_rows.sum()), "new": int((~old_rows).sum())}},
        "population": {"before": population_before, "after": population_after},
        "recovered_fraction": round((after["new"] - before["new"]) / lost, 4) if lost > 0 else None,
        "old_score_change": round(after["old"] - before["old"], 4),
        "old_change_ci95": [round(v, 4) for v in change.ci95],
        "run": {"id": run.pk, "status": status, "decision": run.decision, "gain": run.gain,
                "promoted_version": active.number if active else None,
                "rehearsal": {k: rehearsal[k] for k in ("old", "new", "old_loss", "tolerance") if k in rehearsal}
                if rehearsal else None},
        "dataset_version": version.number,
    }


if __name__ == "__main__" and "--driver" in sys.argv:
    _driver(int(sys.argv[sys.argv.index("--driver") + 1]))
