"""Improvement efficiency: the autonomous loop against Optuna (TPE) and random search, equal wall clock.

The task is pattern-recognition (the digits, 8×8 images, 10 classes), registered exactly as
``make run`` registers it, with its own train/validation/test split. Every contender gets the
same machine, the same torch threads (``THREADS``) and the same wall-clock budget, and is
judged by the accuracy on the task's held-out test split of the model it would serve:

* **loop** — Plasticity as an operator runs it: the weak seeded model (a 2-unit MLP, as the
  demo seeds it), the demo configuration, the loop started, and one django-q2 worker process
  (``manage.py qcluster``) doing the rest on its own: triggers, hormone priorities, the four
  strategies, promotion. The clock starts when the worker is launched. Its score at time t is
  the score of the active version at t. (Its promotion gate reads the test split: one
  accept/reject decision per run, with candidates chosen on validation inside each run.)
* **tpe** / **random** — Optuna's TPE sampler and its random sampler tuning the family of the
  task's starting model, the MLP (depth 1–3, widths 16–512, activation, dropout, norm,
  learning rate, weight decay, batch size), each trial trained by the registry's own trainer
  (AdamW, plateau schedule, gradient clipping, early stopping on validation, ±1 pixel shift
  augmentation — what the loop's training gets). The best point is chosen by validation
  accuracy and its test accuracy is reported; every epoch that improves a trial's validation
  is a point, so a trial cut by the budget counts with the weights it had (as early stopping
  would keep them). A trial never runs past the budget (its training stops at the remaining time).
* **svc** / **knn** — scikit-learn's SVC (RBF) and k-nearest neighbours, C or k picked on the
  validation split, fitted on the training split: the classical baselines, side by side.

One run per contender of the longest budget gives its best-so-far curve; the score at each
shorter budget is read off that curve (no contender knows the budget, so a run cut at t is
the run with budget t). Targets (the issue's): at each budget the loop's test accuracy is at
least TPE's; the loop reaches 0.99 within 600 s (``BENCH_EFFICIENCY_BUDGETS`` sets the budgets;
the default stops at 300 s to keep ``make bench`` under 30 minutes, and 0.99 reached by 300 s
is reached within 600 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import target

NAME = "efficiency"
DESCRIPTION = "the autonomous loop vs Optuna TPE and random search (and SVC, kNN) at equal wall-clock budgets"

REPO = Path(__file__).resolve().parent.parent
BUDGETS = tuple(int(b) for b in os.environ.get("BENCH_EFFICIENCY_BUDGETS", "60,180,300").split(","))
THREADS = 2
TASK = "pattern-recognition"
TARGET_SCORE = 0.99
TARGET_WITHIN_S = 600
# For a quicker look at one side: BENCH_EFFICIENCY_CONTENDERS=loop (targets need loop and tpe).
CONTENDERS = tuple(os.environ.get("BENCH_EFFICIENCY_CONTENDERS", "loop,tpe,random").split(","))
DRIVER_TIMEOUT_S = 4 * max(BUDGETS) + 900
# The demo's configuration (improvement.services.demo_seed) with the demo's one worker.
LOOP_CONFIG = {"improvement_interval": 60.0, "run_time_budget_s": 150.0, "max_concurrent_improvements": 1}


# ------------------------------------------------------------------------------ the harness


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-efficiency-") as tmp:
        var_dir = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "Q_WORKERS"}}
        env.update({
            "DJANGO_SETTINGS_MODULE": "project.settings", "DATABASE_URL": f"sqlite:///{var_dir / 'bench.sqlite3'}",
            "PLASTICITY_VAR_DIR": str(var_dir), "PLASTICITY_MEDIA_ROOT": str(var_dir / "media"),
            "PLASTICITY_TORCH_THREADS": str(THREADS), "Q_WORKERS": "1", "Q_POLL": "0.2",
            "PYTHONUNBUFFERED": "1",
        })
        done = subprocess.run([sys.executable, "-m", "bench.bench_efficiency", "--driver"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"driver failed ({done.returncode}):\n{done.stderr[-4000:]}")
        found = json.loads(done.stdout.strip().splitlines()[-1])
    return _report(found)


def best_at(curve: list[dict[str, float]], t: float) -> float | None:
    """Test score of the best point of ``curve`` finished by ``t`` (points: t, test, and val if chosen by it)."""
    points = [p for p in curve if p["t"] <= t]
    if not points:
        return None
    if "val" in points[0]:
        best = max(points, key=lambda p: (p["val"], -p["t"]))  # the first to reach the best validation
        return best["test"]
    return points[-1]["test"]


def best_val_at(curve: list[dict[str, float]], t: float) -> float | None:
    points = [p["val"] for p in curve if p["t"] <= t and "val" in p]
    return max(points) if points else None


def _report(found: dict[str, Any]) -> dict[str, Any]:
    curves = found["curves"]
    table = []
    for name in [c for c in ("loop", "tpe", "random") if c in curves]:
        row: dict[str, Any] = {"contender": name}
        for budget in BUDGETS:
            row[f"test @{budget}s"] = best_at(curves[name], budget)
            row[f"val @{budget}s"] = best_val_at(curves[name], budget)
        row["evaluated"] = found["counts"][name]
        table.append(row)
    for name, base in found["baselines"].items():
        table.append({"contender": name, **{k: v for b in BUDGETS
                                            for k, v in ((f"test @{b}s", base["test"]), (f"val @{b}s", base["val"]))},
                      "evaluated": f"fit {base['seconds']:.1f} s ({base['chosen']})"})
    targets = []
    for budget in BUDGETS if "tpe" in curves and "loop" in curves else ():
        loop, tpe = best_at(curves["loop"], budget), best_at(curves["tpe"], budget)
        targets.append(target(f"loop ≥ TPE at {budget} s (test accuracy)", f">= {tpe}", loop,
                              loop is not None and tpe is not None and loop >= tpe))
    reached = next((p["t"] for p in curves.get("loop", []) if p["test"] >= TARGET_SCORE), None)
    targets.append(target(f"loop reaches {TARGET_SCORE} test accuracy (seconds)", f"<= {TARGET_WITHIN_S}",
                          reached, reached is not None and reached <= TARGET_WITHIN_S))
    promotions = [{"t_s": round(p["t"], 1), "test": p["test"], "strategy": p.get("strategy"),
                   "genome": p.get("genome")} for p in curves.get("loop", [])]
    return {
        "table": table,
        "tables": {"the loop's promotions (time since the worker was launched)": promotions},
        "targets": targets,
        "curves": curves,
        "baselines": found["baselines"],
        "loop_runs": found["loop_runs"],
        "settings": {"budgets_s": BUDGETS, "threads": THREADS, "task": TASK, "loop_config": LOOP_CONFIG,
                     "n_test": found["n_test"], "search_space": found["search_space"]},
        "notes": [
            f"task {TASK}: {found['n_train']}/{found['n_val']}/{found['n_test']} train/val/test images; "
            f"one test image is {100 / found['n_test']:.2f} points",
            f"every contender: {THREADS} torch threads, one process doing the work; the loop's worker is a "
            "qcluster process launched at t = 0 (its start-up counts against it)",
            "tpe/random: best trial by validation accuracy, its test accuracy reported; loop: the active "
            "version's test accuracy (the promotion gate reads the test split, once per run)",
            f"loop runs: {found['loop_runs_summary']}",
        ],
    }


# ------------------------------------------------------------------------- the driver (Django)

SEARCH_SPACE = {
    "layers": [1, 3], "width": [16, 512], "activation": ["relu", "gelu", "tanh", "silu"],
    "dropout": [0.0, 0.5], "norm": ["none", "batch", "layer"], "lr": [1e-4, 1e-2],
    "weight_decay": [1e-6, 1e-2], "batch_size": [32, 64, 128], "epochs": 100, "patience": 10,
}


def _driver() -> None:
    import django

    django.setup()
    import torch
    from django.core.management import call_command

    torch.set_num_threads(THREADS)
    call_command("migrate", verbosity=0)
    from hormones.services import hormones_ensure
    from improvement.models import ImprovementConfig
    from models_registry.data.builtin import BUILTIN_DATASETS
    from models_registry.evaluation import algorithm_evaluate
    from models_registry.implementations import task_dataset
    from models_registry.services import task_create_builtin

    hormones_ensure()
    ImprovementConfig.objects.update_or_create(pk=1, defaults=LOOP_CONFIG)
    task = task_create_builtin(key=TASK)
    algorithm_evaluate(task=task)
    data = task_dataset(task)
    found: dict[str, Any] = {"curves": {}, "counts": {}, "search_space": SEARCH_SPACE,
                             "n_train": len(data.train[1]), "n_val": len(data.val[1]), "n_test": len(data.test[1])}
    found["baselines"] = _baselines(data)
    budget = max(BUDGETS)
    for name in [c for c in ("tpe", "random") if c in CONTENDERS]:
        curve, trials = _optuna_search(task, data, sampler=name, budget_s=budget)
        found["curves"][name], found["counts"][name] = curve, f"{trials} trials"
        print(f"{name}: {len(curve)} trials, best val {max(p['val'] for p in curve):.4f}", file=sys.stderr)
    if "loop" not in CONTENDERS:
        found["loop_runs"], found["loop_runs_summary"] = [], "not run"
        print(json.dumps(found, default=float))
        return
    curve, runs = _loop(task, BUILTIN_DATASETS[TASK].genome(), budget_s=budget)
    found["curves"]["loop"], found["loop_runs"] = curve, runs
    found["counts"]["loop"] = f"{len(runs)} runs, {sum(r['status'] == 'promoted' for r in runs)} promoted"
    by_strategy: dict[str, list[int]] = {}
    for r in runs:
        by_strategy.setdefault(r["strategy"], [0, 0])
        by_strategy[r["strategy"]][0] += 1
        by_strategy[r["strategy"]][1] += r["status"] == "promoted"
    found["loop_runs_summary"] = ", ".join(f"{s} {n} ({p} promoted)" for s, (n, p) in sorted(by_strategy.items()))
    print(json.dumps(found, default=float))


def _baselines(data) -> dict[str, Any]:
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    (X_train, y_train), (X_val, y_val), (X_test, y_test) = data.train, data.val, data.test
    flat = lambda X: X.reshape(len(X), -1)  # noqa: E731
    out = {}
    grids = {"svc": ("C", [0.3, 1.0, 3.0, 10.0, 30.0], lambda v: SVC(C=v, gamma="scale")),
             "knn": ("k", [1, 3, 5, 7], lambda v: KNeighborsClassifier(n_neighbors=v))}
    for name, (param, values, make) in grids.items():
        start = time.perf_counter()
        scored = []
        for value in values:
            model = make(value).fit(flat(X_train), y_train)
            scored.append((model.score(flat(X_val), y_val), value, model))
        val, value, model = max(scored, key=lambda s: s[0])
        out[name] = {"val": float(val), "test": float(model.score(flat(X_test), y_test)),
                     "chosen": f"{param}={value}", "seconds": time.perf_counter() - start}
    return out


def _optuna_search(task, data, *, sampler: str, budget_s: float) -> tuple[list[dict[str, float]], int]:
    import optuna
    import torch

    from models_registry.nn.evaluation import score_predictions, to_predictions, torch_predict_fn
    from models_registry.nn.genome import build_module, set_normalisation
    from models_registry.nn.training import TrainConfig, TrainData, train_module
    from models_registry.training import task_augment

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (X_train, y_train), (X_val, y_val), (X_test, y_test) = data.train, data.val, data.test
    train_data = TrainData(X_train, y_train, X_val, y_val)
    augment = task_augment(task)
    chooser = optuna.samplers.TPESampler(seed=0) if sampler == "tpe" else optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(direction="maximize", sampler=chooser)
    s = SEARCH_SPACE
    curve: list[dict[str, float]] = []
    start = time.perf_counter()

    def objective(trial) -> float:
        layers = trial.suggest_int("layers", *s["layers"])
        genome = {
            "kind": "mlp", "input_shape": list(task.input_shape), "output_dim": task.n_outputs,
            "hidden": [trial.suggest_int(f"width_{i}", *s["width"], log=True) for i in range(layers)],
            "activation": trial.suggest_categorical("activation", s["activation"]),
            "dropout": trial.suggest_float("dropout", *s["dropout"]),
            "norm": trial.suggest_categorical("norm", s["norm"]),
        }
        remaining = budget_s - (time.perf_counter() - start)
        config = TrainConfig(
            epochs=s["epochs"], patience=s["patience"], seed=trial.number,
            lr=trial.suggest_float("lr", *s["lr"], log=True),
            weight_decay=trial.suggest_float("weight_decay", *s["weight_decay"], log=True),
            batch_size=trial.suggest_categorical("batch_size", s["batch_size"]),
            max_seconds=max(0.5, remaining),
        )
        torch.manual_seed(trial.number)
        module = build_module(genome)
        set_normalisation(module, X_train, y_train, task.output_kind)
        predict = torch_predict_fn(module)
        trial_best = {"val": -1.0}

        def each_epoch(event) -> None:
            # An anytime point whenever this trial's validation improves: a run whose budget ended
            # here would report these weights (early stopping keeps the best-validation ones).
            t = time.perf_counter() - start
            if event["val_score"] > trial_best["val"] and t <= budget_s:
                trial_best["val"] = event["val_score"]
                module.eval()
                test = score_predictions(task.output_kind, y_test, to_predictions(task.output_kind, predict(X_test)))
                module.train()
                curve.append({"t": t, "val": float(event["val_score"]), "test": float(test), "trial": trial.number})

        result = train_module(module, train_data, output_kind=task.output_kind, config=config, augment=augment,
                              progress=each_epoch)
        return float(result.best_val_score)

    while time.perf_counter() - start < budget_s:
        study.optimize(objective, n_trials=1)
    return curve, len(study.trials)


def _loop(task, weak_genome: dict, *, budget_s: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from improvement.models import ImprovementRun
    from improvement.scheduler.loop import cycle_force, loop_start, loop_stop
    from models_registry.models import ModelVersion
    from models_registry.services import model_create
    from models_registry.training import version_seed

    model = model_create(task=task, name="baseline", description="Seeded weak model; the loop improves it.")
    version_seed(model=model, genome=weak_genome)
    log_path = Path(os.environ["PLASTICITY_VAR_DIR"]) / "qcluster.log"
    with open(log_path, "wb") as log:
        t0 = time.time()
        cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=REPO, env=dict(os.environ),
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        loop_start()
        cycle_force()
        while time.time() - t0 < budget_s:
            time.sleep(0.5)
    finally:
        _stop(cluster)
        loop_stop()
    curve = []
    for v in ModelVersion.objects.filter(model=model).order_by("created_at"):
        t = v.created_at.timestamp() - t0
        if t > budget_s:
            continue
        run = ImprovementRun.objects.filter(result_version=v).first()
        curve.append({"t": max(0.0, t), "test": v.score, "strategy": run.strategy if run else "seed",
                      "genome": _genome_text(v.genome)})
    runs = [{"id": r.pk, "strategy": r.strategy, "status": r.status, "trigger": r.trigger_reason[:120],
             "created_s": round(r.created_at.timestamp() - t0, 1),
             "finished_s": round(r.finished_at.timestamp() - t0, 1) if r.finished_at else None,
             "gain": r.gain, "decision": (r.decision or "")[:200]}
            for r in ImprovementRun.objects.filter(model=model).order_by("created_at")]
    return curve, runs


def _genome_text(genome: dict) -> str:
    from models_registry.nn.genome import genome_summary

    return genome_summary(genome)


def _stop(process: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


if __name__ == "__main__" and "--driver" in sys.argv:
    _driver()
