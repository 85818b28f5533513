"""The benchmark suite: the loop against its opponents on six tasks, equal wall clock, sealed test scores.

Six tasks, all generated here or shipped with scikit-learn (nothing is downloaded), each uploaded
to a fresh Plasticity exactly as a user would upload it (``bench/suite_tasks.py``):

* ``signals`` — 1-D signals in 10 classes (a waveform's shape wherever it sits; NPZ);
* ``glyphs`` — 28×28 images of 10 glyphs under affine maps, clutter and noise (NPZ);
* ``friedman`` — tabular regression, scikit-learn's Friedman #1 with noise (CSV);
* ``rare_events`` — imbalanced tabular binary classification, 8 % positives (CSV, balanced accuracy);
* ``hormone_forecast`` — the HPA axis' three hormones over 5⅓ h, cortisol 2 h later (NPZ, R²);
* ``digits`` — the 8×8 digits, the small sanity case (NPZ).

Opponents, each in its own process with one thread, two at a time on this machine, on the same
rows and the same splits (``make_splits`` with the seed, which the upload passes as ``split_seed``):

* **loop** — Plasticity itself: a fresh instance (``manage.py serve``, one worker, the default
  configuration), the data uploaded with no genome; the clock starts when the server is launched.
  Its score at time t is the sealed test score of what ``predict`` serves at t (the route:
  the active neural version's recorded test score, or the algorithm's predictions on the test
  rows). ``loop_neural`` is the best active neural version alone.
* **tpe_same_space** / **random_same_space** — Optuna's TPE and random samplers over the product's
  own search space (``improvement.nn.search_space``: genome families, architecture, training
  settings, augmentation), each trial trained by the product's ``train_trial`` until its own
  epochs and patience stop it (at most ``TRIAL_CAP_S``, the loop's run budget), starting from the
  same first genome the loop starts from.
* **best_classical** — scikit-learn: k-NN, logistic/ridge regression and HistGradientBoosting, each
  over a small grid fitted on the training split; the best on validation so far is the pick.
* **reference_network** — for signals and glyphs: a hand-designed network from the literature
  (Wang et al.'s FCN; LeCun et al.'s LeNet-5) trained with the product's trainer once without
  augmentation and once with translation; the better on validation is the reference.

Every opponent picks on validation (the loop on its gate split); only the sealed test split is
reported. An opponent with nothing to show at a budget scores what a constant guess scores (the
majority class, a balanced accuracy of 1/classes, R² 0). Scores at 60, 180 and 600 s are read off
one run per opponent and seed (nobody knows the budget). Reported: mean and 95 % t-interval over
seeds, CPU-seconds, and the time to reach 95 % of the reference network.

``make bench ONLY=suite`` runs the full suite (5 seeds; about ten hours on a 2-core machine);
``BENCH_SUITE_REDUCED=1`` the reduced one (one seed, 60 s; under 30 minutes), written to
``bench/results/suite_reduced.json``. ``BENCH_SUITE_PROGRESS=1`` runs nothing and summarises a
full run done in sittings so far (the logged jobs of this code, whole task-and-seed pairs only)
into ``bench/results/suite_progress.json``. ``BENCH_SUITE_SEEDS``, ``BENCH_SUITE_BUDGETS``,
``BENCH_SUITE_TASKS`` and ``BENCH_SUITE_SLOTS`` override the parts.

Every finished job is appended to ``bench/results/suite_jobs/<result name>.jsonl`` as it ends (its
curve, the git SHA it ran at, the load). With ``BENCH_SUITE_RESUME=1`` a run takes the jobs
already there instead of running them again, so a full run can be done in several sittings: same
task, seed, opponent and budget, no error, the opponent's current ``OPPONENT_REVISIONS`` entry,
and run at a commit whose product code, dependencies and suite data (``MEASURED_PATHS``) are
those of this checkout. A job that measured other code stays in the log and is run again: a
result that mixed versions of the loop or its trainer would compare versions, not opponents.
The loop runs the whole product, so a loop job needs all of ``MEASURED_PATHS`` unchanged; the
other opponents run only the product modules this file imports for them (the trainer, the search
space, the splits, the metrics) and the suite's data, so their jobs are also taken from a commit
where every file those import, directly or through others, is unchanged (``opponent_files``).
A change to the loop's scheduling or strategies then reruns the loop's jobs only.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS_DIR, git_command, git_state, stop_process_group, target
from bench.suite_tasks import TASKS, SuiteTask, load_task

NAME = "suite"
DESCRIPTION = ("the loop vs TPE and random search in the same space, tuned classical baselines and reference "
               "networks: six tasks, several seeds, 60/180/600 s, sealed test scores")

REPO = Path(__file__).resolve().parent.parent
REDUCED = os.environ.get("BENCH_SUITE_REDUCED", "") not in ("", "0")
SEEDS = tuple(int(v) for v in os.environ.get("BENCH_SUITE_SEEDS", "0" if REDUCED else "0,1,2,3,4").split(","))
BUDGETS = tuple(int(v) for v in os.environ.get("BENCH_SUITE_BUDGETS", "60" if REDUCED else "60,180,600").split(","))
TASK_NAMES = tuple(os.environ.get("BENCH_SUITE_TASKS", ",".join(TASKS)).split(","))
SLOTS = int(os.environ.get("BENCH_SUITE_SLOTS", "2"))
RESUME = os.environ.get("BENCH_SUITE_RESUME", "") not in ("", "0")
#: Run nothing: summarise the logged jobs of this checkout's code, (task, seed) pairs with every
#: opponent finished, into ``suite_progress.json`` (a full run in several sittings, between them).
PROGRESS = os.environ.get("BENCH_SUITE_PROGRESS", "") not in ("", "0")
RESULT_NAME = "suite_reduced" if REDUCED else "suite"
JOBS_LOG = RESULTS_DIR / "suite_jobs" / f"{RESULT_NAME}.jsonl"
OPPONENTS = ("loop", "tpe_same_space", "random_same_space", "best_classical", "reference_network")
#: A trial trains as long as the loop may train one model in one run (the default ``run_time_budget_s``);
#: its own epochs and patience (in the space) usually stop it sooner. A short cap (the architecture
#: strategy's 12 s per trial) would leave TPE's first trial, the loop's first model, under-trained: the
#: strongest sensible TPE trains each trial to its own stopping point.
TRIAL_CAP_S = 240.0
#: The reference networks are trained once, for at most this long (they are not anytime opponents).
REFERENCE_CAP_S = 300.0 if REDUCED else 1200.0
#: The reference network is trained once with each; the better on validation is the reference.
REFERENCE_AUGMENTATIONS = ("none", "shift")
#: Bumped when an opponent's procedure here changes: a resumed run then runs that opponent's jobs
#: again and keeps the others' (whose code did not change).
OPPONENT_REVISIONS = {"loop": 1, "tpe_same_space": 1, "random_same_space": 1, "best_classical": 1,
                      "reference_network": 2}
#: What every job's result depends on besides its opponent's procedure: the product's code, its
#: dependencies and the suite's data. Changes elsewhere (tests, README, other benchmarks) keep the
#: jobs already run.
MEASURED_PATHS = ("improvement", "models_registry", "hormones", "project", "events", "user_algorithms", "manage.py",
                  "pyproject.toml", "bench/suite_tasks.py", "bench/datasets.py")
POLL_S = 5.0
PORT_BASE = 8300


# --------------------------------------------------------------------------- shared by the jobs


def _one_thread() -> None:
    """Every opponent computes on one thread (the worker's ``PLASTICITY_TORCH_THREADS`` default)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Curve:
    """The pick (best on validation so far) over time: one point each time it changes."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = _cpu_seconds()
        self.points: list[dict[str, Any]] = []
        self.best_val = -math.inf

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def offer(self, val: float | None, test: float, **info: Any) -> None:
        if val is None or not val > self.best_val:
            return
        self.best_val = val
        self.points.append({"t": round(self.elapsed(), 2), "cpu": round(_cpu_seconds() - self.cpu0, 2),
                            "val": round(float(val), 5), "test": round(float(test), 5), **info})


def _splits(task: SuiteTask, X: np.ndarray, y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    from models_registry.data.splits import make_splits

    classes = task.output_kind == "classes"
    return make_splits(len(X), y=y if classes else None, stratify=classes, seed=seed)


def _metric(task: SuiteTask, y_train: np.ndarray) -> str:
    from models_registry.nn.metrics import default_metric

    return default_metric(task.output_kind, y_train)


def _score(task: SuiteTask, metric: str, y_true: np.ndarray, raw: np.ndarray) -> float:
    from models_registry.nn.evaluation import raw_score

    return float(raw_score(task.output_kind, y_true, np.asarray(raw), metric))


def _prior_score(task: SuiteTask, metric: str, y_train: np.ndarray, y_test: np.ndarray) -> float:
    """What a constant guess scores on the test rows: the majority class, or the training mean."""
    if task.output_kind == "classes":
        majority = int(np.bincount(y_train.astype(np.int64)).argmax())
        raw = np.full(len(y_test), majority, dtype=np.int64)
    else:
        raw = np.broadcast_to(y_train.mean(axis=0), y_test.shape).copy()
    return _score(task, metric, y_test, raw)


# --------------------------------------------------------------------------- the search opponents


def _search(job: dict[str, Any]) -> dict[str, Any]:
    """TPE or random search over the product's space with the product's trainer, until the budget."""
    import optuna
    import torch

    from improvement.nn.search_space import SearchSpace, genome_params
    from improvement.nn.trials import LocalTrialRunner, train_trial
    from models_registry.nn.evaluation import torch_predict_fn
    from models_registry.nn.families import default_genome
    from models_registry.nn.kinds import input_kind
    from models_registry.nn.training import TrainData

    task = TASKS[job["task"]]
    X, y = load_task(task)
    s = _splits(task, X, y, job["seed"])
    metric = _metric(task, y[s["train"]])
    shape = tuple(X.shape[1:])
    kind = input_kind(shape, named_columns=task.named_columns)
    n_outputs = int(y.max()) + 1 if task.output_kind == "classes" else 1
    space = SearchSpace(input_shape=shape, output_kind=task.output_kind, output_dim=n_outputs, input_kind=kind)
    first = default_genome(list(shape), task.output_kind, n_outputs, named_columns=task.named_columns)
    data = TrainData(X[s["train"]], y[s["train"]], X[s["val"]], y[s["val"]])
    X_test, y_test = X[s["test"]], y[s["test"]]
    sampler = optuna.samplers.RandomSampler(seed=job["seed"]) if job["opponent"] == "random_same_space" else None
    runner = LocalTrialRunner(seed=job["seed"], start_params=genome_params(first, space), sampler=sampler)
    curve = Curve()
    deadline = time.monotonic() + job["budget"]
    trials: list[dict[str, Any]] = []

    def train(spec, index):
        cap = max(1.0, min(TRIAL_CAP_S, deadline - time.monotonic()))
        result = train_trial(spec, data=data, output_kind=task.output_kind, input_kind=kind, metric=metric,
                             seed=job["seed"] * 1000 + index, max_seconds=cap)
        module = result.module
        assert module is not None
        with torch.no_grad():
            test = _score(task, metric, y_test, torch_predict_fn(module)(X_test))
        curve.offer(result.val_score, test, kind=spec.genome["kind"], trial=index)
        trials.append({"t": round(curve.elapsed(), 1), "kind": spec.genome["kind"], "val": result.val_score})
        result.module = None  # the curve keeps the score; the weights are not needed again
        return result

    runner.run(space, n_trials=1_000_000, deadline=deadline, train=train, progress=lambda *a: None)
    return {"points": curve.points, "trials": len(trials), "cpu_seconds": round(_cpu_seconds() - curve.cpu0, 1),
            "metric": metric, "kinds_tried": sorted({t["kind"] for t in trials})}


# --------------------------------------------------------------------------- classical baselines


def _classical_grid(task: SuiteTask, metric: str, rng: np.random.Generator) -> list[tuple[str, dict, Any]]:
    """(family, params, estimator) in the order they are fitted: each family's default first."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes = task.output_kind == "classes"
    # Table columns have their own units (standardised); pixels and samples share one (kept as they are).
    scale = [StandardScaler()] if task.named_columns else []
    knn = [("knn", {"k": k}, make_pipeline(*scale, (KNeighborsClassifier if classes else KNeighborsRegressor)(
        n_neighbors=k, weights="distance"))) for k in (5, 1, 3, 9, 15, 25)]
    if classes:
        linear = [("logistic", {"C": c}, make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=300)))
                  for c in (1.0, 0.01, 0.1, 10.0)]
    else:
        linear = [("ridge", {"alpha": a}, make_pipeline(StandardScaler(), Ridge(alpha=a))) for a in (1.0, 0.1, 10.0, 100.0)]
    hgb = []
    weights = (None, "balanced") if classes and metric != "accuracy" else (None,)
    for lr in (0.1, 0.05, 0.2):
        for leaves in (31, 15, 63):
            for weight in weights:
                params = {"learning_rate": lr, "max_leaf_nodes": leaves, "max_iter": 500, "early_stopping": True,
                          "random_state": 0}
                if classes:
                    estimator = HistGradientBoostingClassifier(**params, class_weight=weight)
                else:
                    estimator = HistGradientBoostingRegressor(**params)
                hgb.append(("hist_gradient_boosting", {"learning_rate": lr, "max_leaf_nodes": leaves,
                                                       "class_weight": weight}, estimator))
    head = [knn[0], linear[0], hgb[0]]
    rest = knn[1:] + linear[1:] + hgb[1:]
    order = rng.permutation(len(rest))
    return head + [rest[i] for i in order]


def _classical(job: dict[str, Any]) -> dict[str, Any]:
    task = TASKS[job["task"]]
    X, y = load_task(task)
    s = _splits(task, X, y, job["seed"])
    metric = _metric(task, y[s["train"]])
    flat = X.reshape(len(X), -1)
    target_train = y[s["train"]] if task.output_kind == "classes" else y[s["train"]].ravel()
    curve = Curve()
    deadline = time.monotonic() + job["budget"]
    fits: list[dict[str, Any]] = []
    best_by_family: dict[str, dict[str, Any]] = {}
    for family, params, estimator in _classical_grid(task, metric, np.random.default_rng(job["seed"])):
        if time.monotonic() >= deadline:
            break
        start = time.monotonic()
        estimator.fit(flat[s["train"]], target_train)

        def raw(rows: np.ndarray, estimator=estimator) -> np.ndarray:
            if task.output_kind == "classes":
                return estimator.predict_proba(flat[rows])
            return estimator.predict(flat[rows]).reshape(-1, 1)

        val = _score(task, metric, y[s["val"]], raw(s["val"]))
        test = _score(task, metric, y[s["test"]], raw(s["test"]))
        fit = {"family": family, "params": params, "val": round(val, 5), "test": round(test, 5),
               "seconds": round(time.monotonic() - start, 2), "done_at": round(curve.elapsed(), 1)}
        fits.append(fit)
        if family not in best_by_family or val > best_by_family[family]["val"]:
            best_by_family[family] = fit
        curve.offer(val, test, family=family)
    return {"points": curve.points, "fits": fits, "best_by_family": best_by_family, "metric": metric,
            "cpu_seconds": round(_cpu_seconds() - curve.cpu0, 1)}


# --------------------------------------------------------------------------- reference networks


def _reference(job: dict[str, Any]) -> dict[str, Any]:
    """The literature's network trained without augmentation and with translation; the better on validation.

    Translation is the standard augmentation for both (shifted digits since LeCun et al. and
    Simard et al.; window shifts for time series, Le Guennec et al.), here the product's ``shift``
    at strength 0.5 (images: up to 3 pixels; signals: a roll of up to an eighth of the length).
    Without it LeNet-5 overfits the 2,400 training glyphs within 50 epochs, a reference any
    augmented search beats easily; with the better of the two the "within 2 points" target can fail.
    """
    import torch

    from bench.datasets import LeNet5, reference_fcn
    from models_registry.nn.augment import augmentation
    from models_registry.nn.evaluation import torch_predict_fn
    from models_registry.nn.kinds import input_kind
    from models_registry.nn.training import TrainConfig, TrainData, train_module

    task = TASKS[job["task"]]
    X, y = load_task(task)
    s = _splits(task, X, y, job["seed"])
    metric = _metric(task, y[s["train"]])
    kind = input_kind(tuple(X.shape[1:]), named_columns=task.named_columns)
    data = TrainData(X[s["train"]], y[s["train"]], X[s["val"]], y[s["val"]])
    curve = Curve()
    trainings = []
    for augment in REFERENCE_AUGMENTATIONS:
        torch.manual_seed(job["seed"])
        module = reference_fcn(X.shape[-1], int(y.max()) + 1) if task.reference == "fcn" else LeNet5(int(y.max()) + 1)
        started = time.monotonic()
        result = train_module(module, data, output_kind="classes",
                              augment=augmentation(kind, augment, 0.5, X_train=data.X_train),
                              config=TrainConfig(epochs=100, patience=15, lr=1e-3, batch_size=64, seed=job["seed"],
                                                 max_seconds=REFERENCE_CAP_S, metric=metric))
        module.eval()
        with torch.no_grad():
            test = _score(task, metric, y[s["test"]], torch_predict_fn(module)(X[s["test"]]))
        trainings.append({"augment": augment, "val": round(result.best_val_score, 5), "test": round(test, 5),
                          "epochs": result.epochs_run, "seconds": round(time.monotonic() - started, 1)})
        curve.offer(result.best_val_score, test, network=task.reference, augment=augment)
    return {"points": curve.points, "metric": metric, "trainings": trainings,
            "cpu_seconds": round(_cpu_seconds() - curve.cpu0, 1)}


# --------------------------------------------------------------------------- the loop


def _tree_cpu(root_pid: int) -> float:
    """CPU seconds of a process and its descendants (living ones, and those it has waited for)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            continue
    return total


def _loop(job: dict[str, Any]) -> dict[str, Any]:
    import requests

    task = TASKS[job["task"]]
    X, y = load_task(task)
    seed = job["seed"]
    s = _splits(task, X, y, seed)
    metric = _metric(task, y[s["train"]])
    X_test, y_test = X[s["test"]], y[s["test"]]
    port = PORT_BASE + job["slot_port"]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="plasticity-suite-") as tmp:
        upload = Path(tmp) / task.filename
        upload.write_bytes(task.upload_bytes())
        env = {**os.environ, "PLASTICITY_VAR_DIR": str(Path(tmp) / "var"), "PLASTICITY_ADMIN_USER": "suite",
               "PLASTICITY_ADMIN_PASSWORD": "suite-operator-pass-42", "LOG_LEVEL": "WARNING",
               "PLASTICITY_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        python = sys.executable
        for command in (["migrate", "--noinput"], ["ensure_operator"]):
            subprocess.run([python, "manage.py", *command], cwd=REPO, env=env, check=True, capture_output=True)
        token = subprocess.run([python, "manage.py", "drf_create_token", "suite"], cwd=REPO, env=env, check=True,
                               capture_output=True, text=True).stdout.split()[2]
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        curve = Curve()  # the clock starts as the server is launched
        wall0 = time.time()
        log = open(Path(tmp) / "serve.log", "w")  # noqa: SIM115 - closed below, after the server
        server = subprocess.Popen([python, "manage.py", "serve", "--port", str(port), "--ws-port", str(port + 1000),
                                   "--workers", "1"], cwd=REPO,
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        served: list[dict[str, Any]] = []
        neural: list[dict[str, Any]] = []
        try:
            while True:
                try:
                    session.get(base + "/api/ping", timeout=5)
                    break
                except requests.RequestException:
                    if curve.elapsed() > 180 or server.poll() is not None:
                        raise RuntimeError("the server did not come up") from None
                    time.sleep(0.5)
            up_at = curve.elapsed()
            slug = f"suite-{task.name.replace('_', '-')}"
            fields = {"name": slug, "slug": slug, "split_seed": str(seed), **task.upload_fields}
            with open(upload, "rb") as fh:
                answer = session.post(base + "/api/tasks", data=fields, files={"file": (task.filename, fh)}, timeout=600)
            if answer.status_code != 201:
                raise RuntimeError(f"upload refused: {answer.status_code} {answer.text[:500]}")
            created = answer.json()
            created_at = curve.elapsed()
            mismatch = {k: (created[f"n_{k}"], len(s[k])) for k in ("train", "val", "gate", "test")
                        if created[f"n_{k}"] != len(s[k])}
            if mismatch or created["metric"] != metric:
                raise RuntimeError(f"the task's splits or metric differ from the suite's: {mismatch}, "
                                   f"{created['metric']} vs {metric}")
            algorithm_test: float | None = None
            last_route: tuple | None = None
            best_neural: tuple | None = None
            while curve.elapsed() < job["budget"]:
                now = curve.elapsed()
                cpu = round(_tree_cpu(server.pid), 1)
                route = (session.get(f"{base}/api/tasks/{slug}/serving", timeout=30).json() or {}).get("route") or {}
                versions = _active_versions(session, base, slug)
                key = (route.get("implementation"), route.get("version_id"))
                if key != last_route and key[0] is not None:
                    if key[0] == "algorithmic":
                        if algorithm_test is None:
                            algorithm_test = _predicted_score(session, base, slug, task, metric, X_test, y_test)
                        score = algorithm_test
                    else:
                        version = versions.get(key[1]) or _version(session, base, key[1])
                        score = version["test_score"]
                    served.append({"t": round(now, 2), "cpu": cpu, "implementation": key[0], "version_id": key[1],
                                   "test": score})
                    last_route = key
                if versions:
                    top = max(versions.values(), key=lambda v: (v["gate_score"] or -1.0))
                    if best_neural is None or top["id"] != best_neural[0]:
                        best_neural = (top["id"],)
                        neural.append({"t": round(now, 2), "cpu": cpu, "version_id": top["id"],
                                       "kind": top.get("kind"), "gate": top["gate_score"], "test": top["test_score"]})
                time.sleep(max(0.0, POLL_S - (curve.elapsed() - now)))
            check = None
            if last_route is not None and last_route[0] == "neural":
                check = _predicted_score(session, base, slug, task, metric, X_test, y_test)
            runs = session.get(base + "/api/runs?limit=200", timeout=30).json().get("results", [])
            cpu_total = round(_tree_cpu(server.pid), 1)
        finally:
            stop_process_group(server, timeout_s=60)
            log.close()
            shutil.copy(Path(tmp) / "serve.log", Path(tempfile.gettempdir()) / f"suite-{job['task']}-{seed}-serve.log")
    return {"points": served, "neural_points": neural, "metric": metric, "server_up_s": round(up_at, 1),
            "task_created_s": round(created_at, 1), "cpu_seconds": cpu_total,
            "served_check": {"served_test_by_predict": check, "recorded": served[-1]["test"] if served else None},
            "runs": [_run_brief(r, wall0) for r in runs]}


def _run_brief(run: dict[str, Any], wall0: float) -> dict[str, Any]:
    """A run of the loop, its times in seconds since the server was launched."""
    import datetime as dt

    brief = {k: run.get(k) for k in ("strategy", "status", "origin", "trigger_reason", "gain", "decision")}
    for key in ("created_at", "started_at", "finished_at"):
        stamp = run.get(key)
        brief[key.removesuffix("_at") + "_s"] = (round(dt.datetime.fromisoformat(stamp).timestamp() - wall0, 1)
                                                 if stamp else None)
    return brief


def _active_versions(session, base: str, slug: str) -> dict[int, dict[str, Any]]:
    out = {}
    for model in session.get(f"{base}/api/models?task={slug}", timeout=30).json().get("results", []):
        version = model.get("active_version")
        if model.get("task") == slug and version:
            out[version["id"]] = {**version, "kind": (model.get("genome") or {}).get("kind")}
    return out


def _version(session, base: str, version_id: int) -> dict[str, Any]:
    return session.get(f"{base}/api/versions/{version_id}", timeout=30).json()


def _predicted_score(session, base: str, slug: str, task: SuiteTask, metric: str, X_test: np.ndarray,
                     y_test: np.ndarray) -> float:
    """The test rows through ``predict`` (what a client gets), scored here."""
    outputs: list = []
    i, batch = 0, 250
    while i < len(X_test):
        answer = session.post(f"{base}/api/tasks/{slug}/predict", json={"inputs": X_test[i:i + batch].tolist()},
                              timeout=120)
        if answer.status_code == 413 and batch > 1:  # the body limit: smaller batches
            batch //= 2
            continue
        answer.raise_for_status()
        outputs += answer.json()["outputs"]
        i += batch
    if task.output_kind == "classes":
        labels = np.asarray(outputs, dtype=np.int64)
        return _score(task, metric, y_test, labels)
    return _score(task, metric, y_test, np.asarray(outputs, dtype=np.float64).reshape(len(y_test), -1))


# --------------------------------------------------------------------------- running and reporting


RUNNERS = {"loop": _loop, "tpe_same_space": _search, "random_same_space": _search, "best_classical": _classical,
           "reference_network": _reference}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One opponent on one task and seed, in a fresh process."""
    _one_thread()
    started = time.time()
    load = os.getloadavg()
    try:
        result = RUNNERS[job["opponent"]](job)
        error = None
    except Exception:  # noqa: BLE001 - one failed job is reported, the others go on
        result, error = {"points": []}, traceback.format_exc()
    return {**job, **result, "error": error, "wall_seconds": round(time.time() - started, 1),
            "load_avg_start": [round(v, 2) for v in load], "load_avg_end": [round(v, 2) for v in os.getloadavg()]}


def _jobs() -> list[dict[str, Any]]:
    jobs = []
    budget = max(BUDGETS)
    for name in TASK_NAMES:
        task = TASKS[name]
        for seed in SEEDS:
            for opponent in OPPONENTS:
                if opponent == "reference_network" and not task.reference:
                    continue
                jobs.append({"task": name, "seed": seed, "opponent": opponent, "budget": budget})
    # Seed by seed and task by task, the opponents of one task and seed one after the other: a busy
    # spell on the machine lands on all of them alike, not on one opponent's every run.
    order = {"loop": 0, "tpe_same_space": 1, "random_same_space": 2, "reference_network": 3, "best_classical": 4}
    jobs.sort(key=lambda j: (j["seed"], TASK_NAMES.index(j["task"]), order[j["opponent"]]))
    for i, job in enumerate(jobs):
        job["slot_port"] = i
    return jobs


def score_at(points: list[dict[str, Any]], t: float, prior: float) -> float:
    """The test score of the pick at time ``t``: the last point at or before it (the prior before any)."""
    score = prior
    for point in points:
        if point["t"] <= t and point["test"] is not None:
            score = point["test"]
    return score


def time_to(points: list[dict[str, Any]], threshold: float) -> float | None:
    for point in points:
        if point["test"] is not None and point["test"] >= threshold:
            return point["t"]
    return None


def interval(values: list[float]) -> dict[str, Any]:
    """Mean and 95 % t-interval over seeds (the interval is the mean itself for one seed)."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": round(mean, 5), "ci95": [round(mean, 5), round(mean, 5)], "values": values}
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": round(mean, 5), "ci95": [round(mean - half, 5), round(mean + half, 5)], "values": values}


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``tasks`` block of ``suite.json`` from the jobs' curves."""
    tasks: dict[str, Any] = {}
    for name in TASK_NAMES:
        task = TASKS[name]
        mine = [r for r in results if r["task"] == name]
        priors = {}
        seeds_here = sorted({r["seed"] for r in mine})
        if seeds_here:  # an interim summary has tasks with no whole seed yet: nothing to load for them
            X, y = load_task(task)
            for seed in seeds_here:
                s = _splits(task, X, y, seed)
                priors[seed] = _prior_score(task, _metric(task, y[s["train"]]), y[s["train"]], y[s["test"]])
        curves: dict[str, dict[int, list]] = {}
        for r in mine:
            curves.setdefault(r["opponent"], {})[r["seed"]] = r["points"]
            if r["opponent"] == "loop":
                curves.setdefault("loop_neural", {})[r["seed"]] = r.get("neural_points", [])
        budgets: dict[str, Any] = {}
        for budget in BUDGETS:
            block = {}
            for opponent, by_seed in curves.items():
                if opponent == "reference_network":
                    values = [score_at(by_seed[seed], math.inf, priors[seed]) for seed in SEEDS if seed in by_seed]
                else:
                    values = [score_at(by_seed[seed], budget, priors[seed]) for seed in SEEDS if seed in by_seed]
                if values:
                    block[opponent] = interval(values)
            budgets[str(budget)] = block
        reference = {seed: score_at(p, math.inf, priors[seed]) for seed, p in curves.get("reference_network", {}).items()}
        reach: dict[str, Any] = {}
        if reference:
            for opponent, by_seed in curves.items():
                if opponent == "reference_network":
                    continue
                times = [time_to(by_seed[seed], 0.95 * reference[seed]) for seed in SEEDS
                         if seed in by_seed and seed in reference]
                reached = [t for t in times if t is not None]
                reach[opponent] = {"reached": f"{len(reached)}/{len(times)}",
                                   "median_s": round(statistics.median(reached), 1) if reached else None}
        cpu = {}
        for opponent in OPPONENTS:
            values = [r.get("cpu_seconds") for r in mine if r["opponent"] == opponent and r.get("cpu_seconds")]
            if values:
                cpu[opponent] = round(statistics.fmean(values), 1)
        metric = next((r.get("metric") for r in mine if r.get("metric")), None)
        tasks[name] = {"seeds": len(seeds_here), "metric": metric, "description": task.description,
                       "prior_score": round(statistics.fmean(priors.values()), 5) if priors else None,
                       "budgets": budgets,
                       "time_to_95pct_of_reference_s": reach, "cpu_seconds_mean": cpu}
    return tasks


def targets_of(tasks: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    top = str(max(BUDGETS))
    for name, block in tasks.items():
        at = block["budgets"][top]
        loop = at.get("loop", {}).get("mean")
        for opponent in ("tpe_same_space", "best_classical"):
            other = at.get(opponent, {}).get("mean")
            if loop is not None and other is not None:
                out.append(target(f"{name} at {top} s: loop ≥ {opponent} (mean test {block['metric']})",
                                  f"≥ {other:.4f}", loop, loop >= other))
        reference = at.get("reference_network", {}).get("mean")
        if loop is not None and reference is not None:
            out.append(target(f"{name} at {top} s: loop within 2 points of the reference network",
                              f"≥ {reference - 0.02:.4f}", loop, loop >= reference - 0.02))
    for budget in BUDGETS:
        wins = 0
        for block in tasks.values():
            at = block["budgets"][str(budget)]
            loop = at.get("loop", {}).get("mean")
            others = [at.get(o, {}).get("mean") for o in ("tpe_same_space", "best_classical")]
            if loop is not None and all(o is not None and loop >= o for o in others):
                wins += 1
        needed = min(4, len(tasks))
        out.append(target(f"at {budget} s: tasks where the loop ≥ TPE and ≥ the best classical", f"≥ {needed}",
                          wins, wins >= needed))
    return out


def table_of(tasks: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, block in tasks.items():
        for budget, at in block["budgets"].items():
            row: dict[str, Any] = {"task": name, "budget_s": int(budget), "metric": block["metric"]}
            for opponent in ("loop", "loop_neural", *OPPONENTS[1:]):
                if opponent in at:
                    lo, hi = at[opponent]["ci95"]
                    row[opponent] = f"{at[opponent]['mean']:.3f} [{lo:.3f}, {hi:.3f}]"
            rows.append(row)
    return rows


def _job_key(job: dict[str, Any]) -> tuple:
    return job["task"], job["seed"], job["opponent"], job["budget"]


def _code_dirty() -> bool:
    """Uncommitted changes to what the jobs measure (``MEASURED_PATHS`` and this file)."""
    status = git_command("--no-optional-locks", "status", "--porcelain", "--", *MEASURED_PATHS, "bench/bench_suite.py")
    return status is None or bool(status.strip())


def measured_code(sha: str | None, repo: Path = REPO) -> str | None:
    """The git object ids of ``MEASURED_PATHS`` at commit ``sha``: equal ids, equal code and data."""
    return code_ids(sha, MEASURED_PATHS, repo)


#: Calls that import a module named at run time: a product file using one may depend on any other.
DYNAMIC_IMPORTS = ("importlib", "import_module", "import_string", "__import__")


def _module_files(name: str, repo: Path) -> list[Path]:
    """The files of the checkout that importing ``name`` runs: its packages' ``__init__`` and the module."""
    files, parts = [], name.split(".")
    for i in range(1, len(parts) + 1):
        base = repo.joinpath(*parts[:i])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                files.append(candidate)
                break
    return files


def _imports_of(path: Path, repo: Path) -> set[str]:
    """Every module a file imports, at module level or inside functions (relative ones resolved)."""
    package = path.relative_to(repo).parts[:-1]  # a module's package, or an __init__'s own
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            stem = ".".join(package[:len(package) - node.level + 1] if node.level else ())
            module = ".".join(p for p in (stem, node.module or "") if p)
            names.add(module)
            # ``from package import name``: name may be a submodule.
            names.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
    return {n for n in names if n}


def import_closure(start: Path, repo: Path = REPO) -> set[Path]:
    """The checkout's files that ``start`` imports, directly or through others (read from the sources)."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports_of(path, repo):
            todo.extend(f for f in _module_files(name, repo) if f not in seen)
    return seen


def _under_measured(relative: str) -> bool:
    return any(relative == p or relative.startswith(p + "/") for p in MEASURED_PATHS)


@functools.cache
def opponent_files() -> tuple[str, ...]:
    """The measured files a job of an opponent other than the loop depends on.

    The product and suite modules this file imports for them, with what those import in turn;
    the dependencies (``pyproject.toml``); and every measured file that is not Python (none today,
    so data shipped in a package counts). A measured file in that set that imports by name at
    run time (``DYNAMIC_IMPORTS``) could reach any other: then all of ``MEASURED_PATHS`` counts.
    """
    tracked = (git_command("ls-files", "--", *MEASURED_PATHS) or "").split()
    closure = {str(p.relative_to(REPO)) for p in import_closure(Path(__file__).resolve())}
    files = {f for f in closure if _under_measured(f)} | {"pyproject.toml"}
    files |= {f for f in tracked if not f.endswith(".py")}
    for relative in files:
        path = REPO / relative
        if relative.endswith(".py") and any(call in path.read_text(encoding="utf-8") for call in DYNAMIC_IMPORTS):
            return MEASURED_PATHS
    return tuple(sorted(files))


def code_ids(sha: str | None, paths: tuple[str, ...], repo: Path = REPO) -> str | None:
    """The git object ids of ``paths`` at commit ``sha``: equal ids, equal files."""
    return git_command("ls-tree", "-r", sha, "--", *paths, cwd=repo) if sha else None


def _logged_jobs(sha: str, *, log: Path | None = None, opponent_paths: tuple[str, ...] | None = None,
                 repo: Path = REPO) -> dict[tuple, dict[str, Any]]:
    """Jobs finished without error by earlier sittings that measured what this run measures.

    A job is taken when its opponent's revision is current and the code it measured is that at
    ``sha``: for the loop, the product's code, its dependencies and the suite's data
    (``measured_code``); for the others, the files they depend on (``opponent_files``, or
    ``opponent_paths``). A job that measured other code would make the result compare versions,
    not opponents. The last of each key wins.
    """
    log = JOBS_LOG if log is None else log
    here = measured_code(sha, repo)
    same: dict[str, bool] = {}
    same_for_opponents: dict[str, bool] = {}
    done: dict[tuple, dict[str, Any]] = {}
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            job = json.loads(line)
            ran_at = str(job.get("git_sha"))
            if ran_at not in same:
                same[ran_at] = here is not None and measured_code(ran_at, repo) == here
            measured_same = same[ran_at]
            if not measured_same and job["opponent"] != "loop":
                if ran_at not in same_for_opponents:
                    paths = opponent_paths if opponent_paths is not None else opponent_files()
                    ids = code_ids(sha, paths, repo)
                    same_for_opponents[ran_at] = ids is not None and code_ids(ran_at, paths, repo) == ids
                measured_same = same_for_opponents[ran_at]
            if (not job.get("error") and measured_same
                    and job.get("revision", 1) == OPPONENT_REVISIONS[job["opponent"]]):
                done[_job_key(job)] = job
    return done


def next_job(queue: list[dict[str, Any]], running: list[dict[str, Any]]) -> dict[str, Any]:
    """Take the job to start in a free slot: the first in order whose side (the loop, or one of
    the other opponents) is not already running, else the first.

    The loop then runs beside an opponent while there are both, as in a fresh run's order, also
    when a short job (a classical baseline) ends early or a resumed run took the opponents' jobs
    from the log (a new version of the loop): two loop jobs side by side slow each other.
    """
    busy = {job["opponent"] == "loop" for job in running}
    for i, job in enumerate(queue):
        if (job["opponent"] == "loop") not in busy:
            return queue.pop(i)
    return queue.pop(0)


def complete_pairs(jobs: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results of the (task, seed) pairs whose every job is among ``results``.

    An interim summary over a pair where only some opponents ran would compare opponents on
    different seeds; only whole pairs are summarised.
    """
    wanted: dict[tuple, set] = {}
    for job in jobs:
        wanted.setdefault((job["task"], job["seed"]), set()).add(job["opponent"])
    have: dict[tuple, set] = {}
    for r in results:
        have.setdefault((r["task"], r["seed"]), set()).add(r["opponent"])
    whole = {pair for pair, opponents in wanted.items() if have.get(pair, set()) >= opponents}
    return [r for r in results if (r["task"], r["seed"]) in whole]


def _progress(jobs: list[dict[str, Any]], sha: str) -> dict[str, Any]:
    """The interim summary of a full run done in sittings: nothing runs, targets are over the seeds so far."""
    done = _logged_jobs(sha)
    results = complete_pairs(jobs, [done[_job_key(job)] for job in jobs if _job_key(job) in done])
    tasks = {name: block for name, block in summarise(results).items() if block["seeds"]}
    seeds = {name: sorted({r["seed"] for r in results if r["task"] == name}) for name in tasks}
    notes = [f"interim: {len(results)} of {len(jobs)} jobs; seeds per task so far: "
             + ", ".join(f"{name} {seeds[name]}" for name in tasks),
             "the targets below are over the seeds so far, not the full run's"]
    return {**_report("suite_progress", results, tasks, notes), "seeds_done": seeds}


def _report(result_name: str, results: list[dict[str, Any]], tasks: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """What a run and an interim summary both write: the summary, its table and targets, the jobs' commits."""
    return {"result_name": result_name, "job_shas": sorted({str(r.get("git_sha")) for r in results}),
            "reduced": REDUCED, "seeds": list(SEEDS), "budgets": list(BUDGETS), "slots": SLOTS, "tasks": tasks,
            "table": table_of(tasks), "targets": targets_of(tasks), "notes": notes}


def _log_job(result: dict[str, Any]) -> None:
    JOBS_LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(JOBS_LOG, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result, default=float) + "\n")


def run() -> dict[str, Any]:
    unknown = [n for n in TASK_NAMES if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown suite tasks {unknown}; known: {', '.join(TASKS)}")
    os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    jobs = _jobs()
    sha = git_state()["git_sha"]
    if PROGRESS:
        return _progress(jobs, sha)
    if RESUME and _code_dirty():
        raise RuntimeError("a resumed suite measures committed code (its jobs are matched by the commit's code): "
                           f"commit the changes to {', '.join(MEASURED_PATHS)} or bench/bench_suite.py first")
    done = _logged_jobs(sha) if RESUME else {}
    results = [done[_job_key(job)] for job in jobs if _job_key(job) in done]
    todo = [job for job in jobs if _job_key(job) not in done]
    print(f"suite at {sha[:10]}: {len(jobs)} jobs ({len(results)} taken from {JOBS_LOG.name}), {len(TASK_NAMES)} tasks × "
          f"{len(SEEDS)} seeds, budget {max(BUDGETS)} s, {SLOTS} at a time", flush=True)
    if not RESUME:
        JOBS_LOG.parent.mkdir(parents=True, exist_ok=True)
        JOBS_LOG.write_text("", encoding="utf-8")
    queue, running = list(todo), {}
    with ProcessPoolExecutor(max_workers=SLOTS, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        while queue or running:
            while queue and len(running) < SLOTS:
                job = next_job(queue, list(running.values()))
                future: Future = pool.submit(run_job, job)
                running[future] = job
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                del running[future]
                result = {**future.result(), "git_sha": sha}
                result["revision"] = OPPONENT_REVISIONS[result["opponent"]]
                results.append(result)
                _log_job(result)
                last = result["points"][-1]["test"] if result["points"] else None
                print(f"  [{len(results)}/{len(jobs)}] {result['task']} seed {result['seed']} {result['opponent']}: "
                      f"final test {last}, {result['wall_seconds']} s" + (" ERROR" if result["error"] else ""),
                      flush=True)
                if result["error"]:
                    print(result["error"], flush=True)
    tasks = summarise(results)
    errors = [f"{r['task']}/{r['seed']}/{r['opponent']}" for r in results if r["error"]]
    notes = [f"jobs that failed (scored as a constant guess): {', '.join(errors)}"] if errors else []
    shas = sorted({str(r.get("git_sha")) for r in results})
    if len(shas) > 1:
        notes.append(f"jobs ran at {len(shas)} commits (a resumed run): {', '.join(s[:10] for s in shas)}")
    return {**_report(RESULT_NAME, results, tasks, notes), "jobs": results}

