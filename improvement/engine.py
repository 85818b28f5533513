"""Execute one improvement run: claim, build the context, build candidates, judge, promote.

Each step is a small function tests can call on its own. ``run_execute`` is what the
django-q2 task and ``manage.py improve`` call.
"""

from __future__ import annotations

import logging
import time
import traceback

import numpy as np
import torch
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction

from improvement.choices import RunStatus
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.promotion import Decision, RunNoLongerRunning, decide, version_promote
from improvement.runs import Heartbeat, RunCancelled, RunReporter, run_claim, run_finish, worker_name
from improvement.strategies import Candidate, StrategyContext, get_strategy
from models_registry.choices import OutputKind, Runtime
from models_registry.evaluation import candidate_evaluate
from models_registry.implementations import algorithm_for_task, fresh_version_module
from models_registry.models import ModelVersion, Task
from models_registry.nn.evaluation import EvaluationResult
from models_registry.nn.training import NonFiniteLossError, TrainConfig
from models_registry.selectors import algorithm_latest_sample, version_best_in_task
from models_registry.services import version_discard
from models_registry.training import generated_data, task_augment, task_sampler, task_train_data
from models_registry.weights import blob_load

logger = logging.getLogger(__name__)

# How long a worker waits for a free slot before handing a run back to the queue.
CAPACITY_WAIT_S = 30.0
# How often a running run proves its worker is alive (the reconciler's timeout is far longer).
HEARTBEAT_INTERVAL_S = 10.0
# run_execute's answer when the database went away under a run: the reconciler takes it over.
INTERRUPTED = "interrupted"


def torch_threads_configure() -> None:
    """Several workers on one machine must not each grab every core."""
    threads = settings.PLASTICITY_TORCH_THREADS
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------- teacher


def teacher_for(task: Task, *, exclude_model_id: int | None, min_score: float = 0.0):
    """The best other implementation of the task: (teacher_fn, module or None, label, score).

    A neural version of another model, or the algorithmic implementation if it scores higher.
    """
    best_version = version_best_in_task(task=task, exclude_model=None)
    if best_version is not None and best_version.model_id == exclude_model_id:
        best_version = version_best_in_task(task=task, exclude_model=best_version.model)
    algo_sample = algorithm_latest_sample(task=task)
    algo_score = algo_sample.score if algo_sample is not None else None
    version_score = best_version.score if best_version is not None else None
    if algo_score is not None and (version_score is None or algo_score > version_score):
        if algo_score < min_score:
            return None
        return _algorithm_teacher(task), None, "algorithm", algo_score
    if best_version is None or (version_score or 0.0) < min_score:
        return None
    module = fresh_version_module(best_version).eval()

    def teach(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)

    return teach, module, f"{best_version.model} v{best_version.number}", version_score


def _algorithm_teacher(task: Task):
    algorithm = algorithm_for_task(task)
    n_classes = task.n_outputs

    def teach(x: torch.Tensor) -> torch.Tensor:
        out = np.asarray(algorithm.predict(x.detach().cpu().numpy()))
        if task.output_kind == OutputKind.CLASSES:
            # Hard labels as confident logits: the soft-target term then matches the labels.
            logits = np.full((len(out), n_classes), -5.0, dtype=np.float32)
            logits[np.arange(len(out)), out.astype(np.int64)] = 5.0
            return torch.from_numpy(logits)
        return torch.from_numpy(out.astype(np.float32).reshape(len(out), -1))

    return teach


def pseudo_label_data(task: Task, teacher_fn, X_train: np.ndarray, *, per_epoch: int, seed: int):
    """Extra data for tasks without a generator: jittered training inputs labelled by the teacher."""
    rng = np.random.default_rng(seed)
    scale = X_train.reshape(len(X_train), -1).std(axis=0).reshape(X_train.shape[1:]) * 0.05

    def extra(epoch: int):
        index = rng.integers(0, len(X_train), size=per_epoch)
        X = (X_train[index] + rng.normal(size=(per_epoch, *X_train.shape[1:])) * scale).astype(np.float32)
        with torch.no_grad():
            raw = teacher_fn(torch.from_numpy(X))
        raw = raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
        if task.output_kind == OutputKind.CLASSES:
            return X, raw.argmax(axis=1).astype(np.int64)
        if task.output_kind == OutputKind.RECONSTRUCTION:
            return X, X
        return X, raw.astype(np.float32).reshape(per_epoch, -1)

    return extra


# --------------------------------------------------------------------------------- context


def context_build(run: ImprovementRun, baseline: ModelVersion, config: ImprovementConfig) -> StrategyContext:
    task = run.model.task
    data = task_train_data(task)
    seed = int(run.params.get("seed", run.pk or 0))
    budget = float(run.params.get("time_budget_s", config.run_time_budget_s))
    train_cfg = TrainConfig(
        epochs=int(run.params.get("epochs", 200)), batch_size=int(run.params.get("batch_size", 128)),
        lr=float(run.params.get("lr", 3e-3)), patience=int(run.params.get("patience", 12)), seed=seed,
        max_seconds=budget,
    )
    teacher = None
    if config.cross_model_distillation or run.strategy == "distillation":
        teacher = teacher_for(task, exclude_model_id=run.model_id)
    extra = generated_data(task, per_epoch=int(run.params.get("generated_per_epoch", 512)), seed=seed)
    if extra is None and teacher is not None and teacher[3] > (baseline.score or 0.0):
        extra = pseudo_label_data(task, teacher[0], data.X_train, per_epoch=min(1024, len(data.X_train)), seed=seed)
    return StrategyContext(
        output_kind=task.output_kind, input_shape=tuple(task.input_shape), genome=baseline.genome,
        module=fresh_version_module(baseline), data=data, train_config=train_cfg, seed=seed,
        time_budget_s=budget, score_tolerance=config.optimization_score_tolerance,
        latency_budget_ms=task.latency_budget_ms, augment=task_augment(task), extra_data=extra,
        sample_inputs=task_sampler(task), teacher_fn=teacher[0] if teacher else None,
        teacher_module=teacher[1] if teacher else None, teacher_label=teacher[2] if teacher else "",
        mutation_rate=float(run.params.get("mutation_rate", 0.3)),
        population_size=int(run.params.get("population_size", 6)),
        generations=int(run.params.get("generations", 3)), params=dict(run.params),
    )


def baseline_evaluate(task: Task, baseline: ModelVersion, module: torch.nn.Module) -> EvaluationResult:
    """Measure the active version now, on this machine, with the candidate's evaluator."""
    onnx_bytes = None
    if baseline.runtime in (Runtime.ONNX_FP32, Runtime.ONNX_INT8):
        onnx_bytes = blob_load(baseline.artifact_file, sha256=baseline.artifact_sha256)
    return candidate_evaluate(task=task, module=module, runtime=baseline.runtime, onnx_bytes=onnx_bytes)


def candidates_judge(
    *, strategy_objective: str, task: Task, baseline: EvaluationResult, candidates: list[Candidate],
    config: ImprovementConfig,
) -> tuple[Candidate, EvaluationResult, Decision]:
    """Evaluate every candidate on the held-out split and keep the one with the best decision."""
    judged = []
    for candidate in candidates:
        evaluation = candidate_evaluate(task=task, module=candidate.module, runtime=candidate.runtime,
                                        onnx_bytes=candidate.onnx_bytes)
        decision = decide(
            objective=strategy_objective, baseline=baseline, candidate=evaluation,
            threshold=config.performance_threshold, score_tolerance=config.optimization_score_tolerance,
            latency_budget_ms=task.latency_budget_ms,
        )
        judged.append((candidate, evaluation, decision))
    # Promotable ones first, then the largest gain.
    return max(judged, key=lambda item: (item[2].promote, item[2].gain))


# ----------------------------------------------------------------------------------- run


def run_execute(*, run_id: int, worker: str | None = None, on_progress=None) -> str:
    """Run one improvement end to end. Returns the final status (or 'skipped', 'deferred', 'interrupted')."""
    worker = worker or worker_name()
    claim = run_claim(run_id=run_id, worker=worker)
    deadline = time.monotonic() + CAPACITY_WAIT_S
    while claim == "at_capacity" and time.monotonic() < deadline:
        time.sleep(1.0)
        claim = run_claim(run_id=run_id, worker=worker)
    if claim == "at_capacity":
        # Every slot is busy on other workers: hand the run back to the queue for later.
        from improvement.runs import run_enqueue

        run_enqueue(run_id=run_id)
        return "deferred"
    if claim != "claimed":
        logger.info("run #%s not claimed (%s): duplicate delivery ignored", run_id, claim)
        return "skipped"
    torch_threads_configure()
    run = ImprovementRun.objects.select_related("model__task", "baseline_version").get(pk=run_id)
    reporter = RunReporter(run, on_flush=on_progress)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    status = RunStatus.FAILED
    try:
        with Heartbeat(run.pk, worker, interval_s=HEARTBEAT_INTERVAL_S):
            status = _run_body(run, reporter)
    except RunCancelled:
        status = _finish_cancelled(run)
    except NonFiniteLossError as exc:
        reporter.log(f"aborted: {exc}")
        run_finish(run_id=run.pk, status=RunStatus.FAILED, error=f"non-finite loss: {exc}", message="non-finite loss")
        status = RunStatus.FAILED
    except RunNoLongerRunning as exc:
        logger.warning("%s", exc)
        status = ImprovementRun.objects.get(pk=run.pk).status
    except (OperationalError, InterfaceError) as exc:
        # The database went away under the run (longer than the reporter waits, or outside a
        # report), so it cannot even be marked failed. Its heartbeat has stopped: once the
        # database is back the reconciler requeues it (or ends it failed, attempts spent).
        logger.error("run #%s interrupted, database unavailable: %s", run.pk, exc)
        status = INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - any failure ends the run with its reason
        logger.exception("run #%s failed", run.pk)
        run_finish(run_id=run.pk, status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}\n"
                   + "".join(traceback.format_exc(limit=6))[-4000:], message="failed")
        status = RunStatus.FAILED
    finally:
        try:
            ImprovementRun.objects.filter(pk=run.pk).update(
                cpu_seconds=time.process_time() - cpu_start, peak_memory_mb=reporter.peak_rss_mb,
            )
        except (OperationalError, InterfaceError):
            logger.warning("run #%s: resource usage not saved, database unavailable", run.pk)
        if status != INTERRUPTED:
            _after_run(run.pk, status, wall_s=time.perf_counter() - wall_start)
    return status


def _run_body(run: ImprovementRun, reporter: RunReporter) -> str:
    config = ImprovementConfig.load()
    task = run.model.task
    strategy = get_strategy(run.strategy)
    baseline = run.model.versions.filter(is_active=True).first()
    if baseline is None:
        raise RuntimeError(f"{run.model} has no active version to improve")
    reporter.log(f"strategy {strategy.name}, objective {strategy.objective}, baseline v{baseline.number}")
    context = context_build(run, baseline, config)
    if run.strategy == "architecture":
        from improvement.search import population_evaluator

        context.evaluate_population = population_evaluator(run, context, reporter)
    baseline_eval = baseline_evaluate(task, baseline, fresh_version_module(baseline))
    ImprovementRun.objects.filter(pk=run.pk).update(
        baseline_version=baseline, baseline_metrics=baseline_eval.as_dict(), objective=strategy.objective,
    )
    reporter.log(f"baseline score {baseline_eval.score:.4f}, p95@1 {baseline_eval.latency.get('p95_ms_b1', 0):.3f} ms")
    reporter(0.02, "building candidates")
    candidates = strategy.build_candidates(context, reporter)
    if not candidates:
        run_finish(run_id=run.pk, status=RunStatus.REJECTED, decision="rejected: the strategy built no candidate")
        return RunStatus.REJECTED
    reporter(0.97, f"evaluating {len(candidates)} candidate(s) on the held-out split")
    candidate, evaluation, decision = candidates_judge(
        strategy_objective=strategy.objective, task=task, baseline=baseline_eval, candidates=candidates,
        config=config,
    )
    reporter.log(decision.reason)
    reporter.flush(0.99, "deciding")
    if not decision.promote:
        run_finish(run_id=run.pk, status=RunStatus.REJECTED, decision=decision.reason, gain=decision.gain,
                   candidate_metrics={**evaluation.as_dict(), "note": candidate.note, "genome": candidate.genome})
        return RunStatus.REJECTED
    previous = baseline
    version = version_promote(
        run=run, genome=candidate.genome, state_dict=candidate.module.state_dict(), evaluation=evaluation,
        runtime=candidate.runtime, onnx_bytes=candidate.onnx_bytes, decision=decision, parent=baseline,
    )
    with transaction.atomic():
        from improvement.runs import run_announce_finished

        run_announce_finished(run_id=run.pk)
    if not config.model_backup_enabled:
        version_discard(version=previous)
    reporter.log(f"promoted v{version.number}")
    return RunStatus.PROMOTED


def _finish_cancelled(run: ImprovementRun) -> str:
    from django.utils import timezone

    with transaction.atomic():
        done = ImprovementRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING, cancel_requested=True).update(
            status=RunStatus.CANCELLED, finished_at=timezone.now(), decision="cancelled by an operator",
            progress_message="cancelled",
        )
        if done:
            from improvement.runs import run_announce_finished

            run_announce_finished(run_id=run.pk)
    return ImprovementRun.objects.get(pk=run.pk).status


def _after_run(run_id: int, status: str, *, wall_s: float) -> None:
    """Clean-up and signals that follow a finished run; never fails the run itself."""
    try:
        from improvement.search import search_files_delete

        search_files_delete(run_id=run_id)
    except Exception:  # noqa: BLE001
        logger.exception("removing search files of run #%s failed", run_id)
    try:
        from improvement.signals import run_finished_signals

        run_finished_signals(run_id=run_id, status=status, wall_s=wall_s)
    except Exception:  # noqa: BLE001
        logger.exception("post-run signals for run #%s failed", run_id)
    try:
        from improvement.loop import cycle_after_run

        cycle_after_run()
    except Exception:  # noqa: BLE001
        logger.exception("the cycle after run #%s failed", run_id)
