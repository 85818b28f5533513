"""Architecture search shared by several workers.

The run's worker writes each generation as ``SearchCandidate`` rows and enqueues one
django-q2 task per candidate; any free worker claims a candidate with a conditional UPDATE
and trains it. The run's own worker claims candidates too while it waits, so a search
finishes even when it is the only worker. Candidate training is deterministic, so the
result does not depend on which worker trained what.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import torch
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from improvement.choices import RunStatus
from improvement.models import ImprovementConfig, ImprovementRun, SearchCandidate
from improvement.nn.evolution import Individual
from improvement.nn.gain_model import Prescreen
from improvement.predictor import genome_history
from improvement.runs.context import context_build, torch_threads_configure
from improvement.runs.lifecycle import worker_name
from improvement.runs.search_files import search_files_delete
from improvement.strategies.architecture import (
    PRESCREEN_FACTOR_PARAM,
    candidate_train_config,
    train_genome_candidate,
)
from improvement.strategies.registry import StrategyContext
from models_registry.nn.genome import build_module
from models_registry.selectors import version_active
from models_registry.weights import blob_delete, weights_load, weights_save

logger = logging.getLogger(__name__)

POLL_S = 0.2


def _claim(candidate_id: int, worker: str) -> bool:
    now = timezone.now()
    return bool(SearchCandidate.objects.filter(pk=candidate_id, status=SearchCandidate.Status.PENDING).update(
        status=SearchCandidate.Status.RUNNING, worker=worker[:120], heartbeat_at=now,
    ))


def _train_and_store(candidate: SearchCandidate, context: StrategyContext, n_total: int) -> None:
    parent_state = {k: v.detach().clone() for k, v in context.module.state_dict().items()}
    try:
        result = train_genome_candidate(
            candidate.genome, parent_state=parent_state, data=context.data, output_kind=context.output_kind,
            config=candidate_train_config(context, n_candidates=n_total, index=candidate.index),
            augment=context.augment, extra_data=context.extra_data,
        )
        name, sha, _ = weights_save(result.module.state_dict(), folder=f"search/run-{candidate.run_id}")
        done = SearchCandidate.objects.filter(pk=candidate.pk, status=SearchCandidate.Status.RUNNING,
                                              worker=candidate.worker).update(
            status=SearchCandidate.Status.DONE, score=result.val_score, latency_ms=result.latency_ms,
            n_parameters=result.n_parameters, seconds=result.seconds, weights_file=name, weights_sha256=sha,
            heartbeat_at=timezone.now(),
        )
        if not done:
            blob_delete(name)
    except Exception as exc:  # noqa: BLE001 - a broken genome fails that candidate only
        logger.exception("search candidate %s failed", candidate.pk)
        SearchCandidate.objects.filter(pk=candidate.pk, status=SearchCandidate.Status.RUNNING).update(
            status=SearchCandidate.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000],
        )


def search_context(run: ImprovementRun) -> StrategyContext:
    torch_threads_configure()
    baseline = run.baseline_version or version_active(model=run.model)
    if baseline is None:
        raise RuntimeError(f"{run.model} has no active version to improve")
    return context_build(run, baseline, ImprovementConfig.load())


def search_candidate_execute(*, candidate_id: int) -> str:
    """django-q2 entry: train one candidate if nobody has claimed it yet."""
    worker = worker_name()
    if not _claim(candidate_id, worker):
        return "skipped"
    candidate = SearchCandidate.objects.select_related("run__model__task", "run__baseline_version").get(pk=candidate_id)
    run = candidate.run
    if run.status != RunStatus.RUNNING:
        SearchCandidate.objects.filter(pk=candidate_id).update(status=SearchCandidate.Status.FAILED,
                                                              error="the search's run is no longer running")
        return "abandoned"
    context = search_context(run)
    n_total = int(run.params.get("n_candidates_total", context.population_size * context.generations))
    _train_and_store(candidate, context, n_total)
    return "done"


def population_evaluator(run: ImprovementRun, context: StrategyContext, reporter):
    """An ``evaluate(genomes) -> individuals`` for ``evolve`` that fans out to all workers."""
    n_total = context.population_size * context.generations
    # A requeued run (its worker vanished) searches again from the start: the previous attempt's
    # candidates would collide with the new ones on (run, index).
    search_files_delete(run_id=run.pk)
    SearchCandidate.objects.filter(run=run).delete()
    ImprovementRun.objects.filter(pk=run.pk).update(params={**run.params, "n_candidates_total": n_total})
    state = {"generation": 0, "next_index": 0, "done": 0}
    worker = worker_name()
    stale_after = timedelta(seconds=settings.PLASTICITY_HEARTBEAT_TIMEOUT)

    def evaluate(genomes: list[dict]) -> list[Individual]:
        with transaction.atomic():
            rows = [SearchCandidate(run=run, generation=state["generation"], index=state["next_index"] + i,
                                    genome=genome) for i, genome in enumerate(genomes)]
            rows = SearchCandidate.objects.bulk_create(rows)
            ids = list(SearchCandidate.objects.filter(
                run=run, index__gte=state["next_index"], index__lt=state["next_index"] + len(genomes)
            ).order_by("index").values_list("pk", flat=True))
            transaction.on_commit(lambda: _enqueue(ids))
        state["next_index"] += len(genomes)
        state["generation"] += 1
        while True:
            pending = list(SearchCandidate.objects.filter(pk__in=ids, status=SearchCandidate.Status.PENDING)
                           .values_list("pk", flat=True))
            for candidate_id in pending:
                if _claim(candidate_id, worker):
                    _train_and_store(SearchCandidate.objects.get(pk=candidate_id), context, n_total)
                    break
            else:
                _reclaim_stale(ids, stale_after)
            rows = list(SearchCandidate.objects.filter(pk__in=ids).order_by("index"))
            finished = sum(r.status in (SearchCandidate.Status.DONE, SearchCandidate.Status.FAILED) for r in rows)
            reporter(0.05 + 0.9 * (state["done"] + finished) / n_total,
                     f"search: {state['done'] + finished}/{n_total} candidates trained "
                     f"({len({r.worker for r in rows if r.worker})} worker(s))")
            if finished == len(rows):
                break
            if not pending:
                time.sleep(POLL_S)
        state["done"] += len(rows)
        individuals = []
        for row in rows:
            extra = {"candidate_id": row.pk, "worker": row.worker}
            if row.status == SearchCandidate.Status.DONE:
                extra["load_module"] = _loader(row)
            individuals.append(Individual(genome=row.genome, score=row.score, latency_ms=row.latency_ms,
                                          n_parameters=row.n_parameters, error=row.error or None, extra=extra))
        return individuals

    return _prescreened(run, context, evaluate, keep=context.population_size, log=reporter.log)


PRESCREEN_FACTOR = 2  # breed twice the candidates, train the better half by predicted score


def _prescreened(run: ImprovementRun, context: StrategyContext, evaluate, *, keep: int, log):
    """Wrap ``evaluate`` in the predictor's pre-screen, unless the run opts out (``params["prescreen"]: false``).

    The genome scorer learns from the task's earlier searches and from this one as it goes;
    while it does not rank held-out candidates better than chance, each generation trains the
    first ``keep`` genomes in bred order, as an unscreened search would.
    """
    if run.params.get("prescreen", True) is False:
        context.params[PRESCREEN_FACTOR_PARAM] = 1
        return evaluate
    history = genome_history(task=run.model.task, exclude_run_id=run.pk)
    context.params[PRESCREEN_FACTOR_PARAM] = PRESCREEN_FACTOR
    log(f"pre-screen: breeding {PRESCREEN_FACTOR}× per generation, training the best {keep} by predicted "
        f"score; {len(history)} candidates of earlier searches to learn from")
    return Prescreen(evaluate, parent=context.genome, keep=keep, history=history, seed=context.seed,
                     individual_factory=Individual, log=log)


def _enqueue(ids: list[int]) -> None:
    for candidate_id in ids:
        async_task("improvement.tasks.evaluate_search_candidate", candidate_id,
                   task_name=f"search-candidate-{candidate_id}", group="search")


def _reclaim_stale(ids: list[int], stale_after: timedelta) -> None:
    cutoff = timezone.now() - stale_after
    SearchCandidate.objects.filter(pk__in=ids, status=SearchCandidate.Status.RUNNING,
                                   heartbeat_at__lt=cutoff).update(status=SearchCandidate.Status.PENDING, worker="")


def _loader(row: SearchCandidate):
    def load() -> torch.nn.Module:
        module = build_module(row.genome)
        module.load_state_dict(weights_load(row.weights_file, sha256=row.weights_sha256))
        return module.eval()

    return load


__all__ = ["population_evaluator", "search_candidate_execute", "search_files_delete"]
