"""Execute one improvement run: claim, build the context, build candidates, judge, promote.

Each step is a small function tests can call on its own. ``run_execute`` is what the
django-q2 task and ``manage.py improve`` call. State changes go through the run lifecycle
(``improvement.runs.lifecycle``) and the promotion service; when the run is over, the cycle
that fills its freed slot is enqueued as a task of its own, never called from here.
"""

from __future__ import annotations

import logging
import time
import traceback

import numpy as np
from django.db import InterfaceError, OperationalError, transaction
from django_q.tasks import async_task

from improvement.choices import RunStatus
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.releases import run_finished_signals
from improvement.runs.checkpoints import RunCheckpoints
from improvement.runs.context import baseline_evaluate, context_build, torch_threads_configure
from improvement.runs.lifecycle import (
    HEARTBEAT_INTERVAL_S,
    Heartbeat,
    RunCancelled,
    RunReporter,
    run_claim,
    run_enqueue,
    run_files_delete,
    run_finish,
    run_finish_cancelled,
    worker_name,
)
from improvement.runs.promotion import Decision, RunNoLongerRunning, decide, rehearsal_judge, version_promote
from improvement.runs.search import SharedTrialRunner
from improvement.strategies.common import fastest_runtime
from improvement.strategies.registry import NEED_SHARED_SEARCH, Candidate, get_strategy
from models_registry.dataset_versions import version_new_rows_start
from models_registry.evaluation import candidate_evaluate, version_score_reference
from models_registry.implementations import fresh_version_module, task_dataset
from models_registry.models import ModelVersion, Task
from models_registry.nn.evaluation import EvaluationResult
from models_registry.nn.training import NonFiniteLossError
from models_registry.sealed import deciding
from models_registry.selectors import version_active

logger = logging.getLogger(__name__)

# How long a worker waits for a free slot before handing a run back to the queue.
CAPACITY_WAIT_S = 30.0
# run_execute's answer when the database went away under a run: the reconciler takes it over.
INTERRUPTED = "interrupted"
# The django-q2 task that fills a freed slot once a run is over.
SLOT_FREED_TASK = "improvement.tasks.cycle_after_run"


def gate_new_rows(*, task: Task, baseline_version: ModelVersion | None) -> np.ndarray | None:
    """Per gate row, whether it was added after ``baseline_version`` was trained; None if none was."""
    start = None if baseline_version is None else version_new_rows_start(version=baseline_version)
    if start is None:
        return None
    return task_dataset(task).splits["gate"] >= start


def candidates_judge(
    *, strategy_objective: str, task: Task, baseline: EvaluationResult, candidates: list[Candidate],
    config: ImprovementConfig, baseline_version: ModelVersion | None = None,
) -> tuple[Candidate, EvaluationResult, Decision]:
    """Evaluate every candidate on the gate split and keep the one with the best decision.

    With ``baseline_version``, a score candidate is also judged on the gate rows the baseline was
    trained with and those added since, apart (``rehearsal_judge``): gaining on the new data must
    not cost more than ``forgetting_tolerance`` on the old.
    A decision: the sealed test split cannot be read in here (``models_registry.sealed``).
    """
    y_gate = task_dataset(task).gate[1]
    reference = None if baseline_version is None else version_score_reference(baseline_version)
    new_rows = gate_new_rows(task=task, baseline_version=baseline_version) if strategy_objective == "score" else None
    judged = []
    with deciding("promotion"):
        for candidate in candidates:
            evaluation = candidate_evaluate(task=task, module=candidate.module, runtime=candidate.runtime,
                                            onnx_bytes=candidate.onnx_bytes)
            decision = decide(
                objective=strategy_objective, baseline=baseline, candidate=evaluation, y_gate=y_gate,
                threshold=config.performance_threshold, alpha=config.promotion_alpha,
                score_tolerance=config.optimization_score_tolerance, latency_budget_ms=task.latency_budget_ms,
                reference_score=reference,
            )
            if new_rows is not None:
                decision = rehearsal_judge(decision=decision, baseline=baseline, candidate=evaluation, y_gate=y_gate,
                                           new_rows=new_rows, tolerance=config.forgetting_tolerance, alpha=config.promotion_alpha,
                                           min_new_rows=config.rehearsal_min_new_gate_rows)
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
        run_enqueue(run_id=run_id)
        return "deferred"
    if claim != "claimed":
        logger.info("run #%s not claimed (%s): duplicate delivery ignored", run_id, claim)
        return "skipped"
    torch_threads_configure()
    run = ImprovementRun.objects.select_related("model__task", "baseline_version").get(pk=run_id)
    reporter = RunReporter(run, on_flush=on_progress)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    status: str = RunStatus.FAILED
    try:
        with Heartbeat(run.pk, worker, interval_s=HEARTBEAT_INTERVAL_S):
            status = _run_body(run, reporter)
    except RunCancelled:
        status = run_finish_cancelled(run_id=run.pk)
    except NonFiniteLossError as exc:
        reporter.log(f"aborted: {exc}")
        run_finish(run_id=run.pk, status=RunStatus.FAILED, error=f"non-finite loss: {exc}", message="non-finite loss")
        status = RunStatus.FAILED
    except RunNoLongerRunning as exc:
        logger.warning("%s", exc)
        status = ImprovementRun.objects.values_list("status", flat=True).get(pk=run.pk)
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
    baseline = version_active(model=run.model)
    if baseline is None:
        raise RuntimeError(f"{run.model} has no active version to improve")
    reporter.log(f"strategy {strategy.name}, objective {strategy.objective}, baseline v{baseline.number}")
    context = context_build(run, baseline, config)
    context.checkpoints = RunCheckpoints(run.pk, run.worker)
    context.log = reporter.log
    if run.attempts > 1:
        kept = sorted(run.checkpoint) if run.checkpoint else []
        reporter.log(f"attempt {run.attempts}: the previous worker vanished; resuming from "
                     + (f"checkpoints {', '.join(kept)}" if kept else "the search's finished trials, if any"))
    if NEED_SHARED_SEARCH in strategy.needs:
        context.trial_runner = SharedTrialRunner(run, context, reporter)
    baseline_eval = baseline_evaluate(task, baseline, fresh_version_module(baseline))
    ImprovementRun.objects.filter(pk=run.pk).update(
        baseline_version=baseline, baseline_metrics=baseline_eval.as_dict(), objective=strategy.objective,
    )
    reporter.log(f"baseline score {baseline_eval.score:.4f}, p95@1 {baseline_eval.latency.get('p95_ms_b1', 0):.3f} ms")
    new_start = version_new_rows_start(version=baseline)
    if new_start is not None and strategy.objective == "score":
        # Training reads the task's whole training split, appended rows included: old and new together.
        reporter.log(f"rehearsal: rows {new_start}–{task.n_samples - 1} were added since v{baseline.number} was "
                     f"trained; training uses the whole training split ({len(context.data.X_train)} rows, old and "
                     "new together), and the gate judges the old and the new rows apart")
    reporter(0.02, "building candidates")
    candidates = strategy.build_candidates(context, reporter)
    if not candidates:
        run_finish(run_id=run.pk, status=RunStatus.REJECTED, decision="rejected: the strategy built no candidate")
        return RunStatus.REJECTED
    if strategy.objective == "score":
        # Optimizations stick: each candidate runs on its fastest runtime within the score tolerance.
        reporter(0.95, "choosing each candidate's runtime")
        candidates = [fastest_runtime(c, context) for c in candidates]
        for c in candidates:
            reporter.log(f"runtime {c.runtime} for {c.note or 'the candidate'}: the fastest within the score "
                         f"tolerance on validation ({c.details.get('runtime_choice', 'not compiled')})")
    reporter(0.97, f"judging {len(candidates)} candidate(s) on the gate split")
    candidate, evaluation, decision = candidates_judge(
        strategy_objective=strategy.objective, task=task, baseline=baseline_eval, candidates=candidates,
        config=config, baseline_version=baseline,
    )
    reporter.log(decision.reason)
    reporter.flush(0.99, "deciding")
    if not decision.promote:
        run_finish(run_id=run.pk, status=RunStatus.REJECTED, decision=decision.reason, gain=decision.gain,
                   candidate_metrics={**evaluation.as_dict(), "note": candidate.note, "genome": candidate.genome,
                                      "gate_test": decision.evidence})
        return RunStatus.REJECTED
    version = version_promote(
        run=run, genome=candidate.genome, state_dict=candidate.module.state_dict(), evaluation=evaluation,
        runtime=candidate.runtime, onnx_bytes=candidate.onnx_bytes, decision=decision, parent=baseline,
        backup=config.model_backup_enabled,
    )
    reporter.log(f"promoted v{version.number}")
    return RunStatus.PROMOTED


def _after_run(run_id: int, status: str, *, wall_s: float) -> None:
    """Clean-up and signals that follow a finished run; never fails the run itself."""
    run_files_delete(run_id)
    try:
        run_finished_signals(run_id=run_id, status=status, wall_s=wall_s)
    except Exception:  # noqa: BLE001
        logger.exception("post-run signals for run #%s failed", run_id)
    try:
        # The freed slot is filled by a cycle of its own, on the queue: the flow runs one way.
        transaction.on_commit(lambda: async_task(SLOT_FREED_TASK, task_name=f"slot-freed-{run_id}",
                                                 group="improvement"))
    except Exception:  # noqa: BLE001
        logger.exception("queueing the cycle after run #%s failed", run_id)
