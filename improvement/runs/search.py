"""The architecture search shared by every worker: one persistent Optuna study per model.

* **Storage** — the study lives in the project's database: the same PostgreSQL in the
  distributed mode (Optuna's RDB storage), a SQLite file beside the project's SQLite database
  in the embedded mode (``optuna_storage_url``). It is named by model, metric, objectives and
  search-space version, so a model's search continues across runs: a later run's sampler knows
  every earlier trial and starts where they stopped.
* **Fan-out** — the run's worker asks the study for a batch of trials (``parallel`` at a time;
  TPE's constant liar keeps a batch diverse), writes them as ``SearchCandidate`` rows and
  enqueues one django-q2 task per trial; any free worker claims a trial with a conditional
  UPDATE and trains it. The run's own worker claims trials too while it waits, so a search
  finishes even when it is the only worker. Only the run's worker tells the study results.
* **Determinism** — a trial's training depends only on its parameters, the data and its seed,
  so the result does not depend on which worker trained it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import optuna
import torch
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_q.tasks import async_task

from improvement.choices import RunStatus
from improvement.models import ImprovementConfig, ImprovementRun, SearchCandidate
from improvement.nn.search_space import SPACE_VERSION, SearchSpace, TrialSpec, genome_params, suggest
from improvement.nn.trials import TrialResult, directions, study_sampler
from improvement.runs.context import context_build, torch_threads_configure
from improvement.runs.lifecycle import Heartbeat, RunReporter, worker_name
from improvement.strategies.architecture import n_trials, search_fraction, search_share, trial_trainer
from improvement.strategies.registry import StrategyContext
from models_registry.nn.genome import GenomeError, build_module
from models_registry.selectors import version_active
from models_registry.weights import blob_delete, weights_load, weights_save

logger = logging.getLogger(__name__)

POLL_S = 0.2
#: Trials asked at once (run param ``parallel``): about the number of workers that may help.
DEFAULT_PARALLEL = 2


# ------------------------------------------------------------------------------ storage


def optuna_storage_url() -> str:
    """Where studies live: ``PLASTICITY_OPTUNA_STORAGE``, else the project's own database."""
    explicit = getattr(settings, "PLASTICITY_OPTUNA_STORAGE", "")
    if explicit:
        return explicit
    db = connection.settings_dict
    if "postgresql" in db["ENGINE"]:
        auth = db["USER"] or ""
        if db.get("PASSWORD"):
            auth += f":{db['PASSWORD']}"
        return (f"postgresql+psycopg://{auth}{'@' if auth else ''}{db.get('HOST') or '127.0.0.1'}:"
                f"{db.get('PORT') or 5432}/{db['NAME']}")
    name = Path(str(db["NAME"]))
    return f"sqlite:///{name.with_name(name.stem + '-optuna.sqlite3')}"


#: Study storages a process keeps open at once (one per storage URL; a deployment has one).
STORAGES_KEPT = 4
_storages: dict[str, optuna.storages.RDBStorage] = {}
_storages_lock = threading.Lock()


def _storage(url: str) -> optuna.storages.RDBStorage:
    """One storage (and connection pool) per URL in this process; the oldest of more than a few is closed."""
    with _storages_lock:
        if url not in _storages:
            while len(_storages) >= STORAGES_KEPT:
                _storages.pop(next(iter(_storages))).engine.dispose()
            kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}
            _storages[url] = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        return _storages[url]


def study_storages_close() -> None:
    """Close the study storages this process opened (their pooled database sessions included)."""
    with _storages_lock:
        for storage in _storages.values():
            storage.engine.dispose()
        _storages.clear()


def study_name(run: ImprovementRun, objectives: Sequence[str]) -> str:
    return (f"plasticity-model-{run.model_id}-{run.model.task.metric}-{'+'.join(objectives)}"
            f"-space{SPACE_VERSION}")


def study_for(run: ImprovementRun, objectives: Sequence[str]) -> optuna.Study:
    """The model's persistent study (created on first use)."""
    return optuna.create_study(storage=_storage(optuna_storage_url()), study_name=study_name(run, objectives),
                               directions=directions(objectives),
                               sampler=study_sampler(objectives, seed=run.pk or 0), load_if_exists=True)


# ------------------------------------------------------------------------------ workers


def _claim(candidate_id: int, worker: str) -> bool:
    now = timezone.now()
    return bool(SearchCandidate.objects.filter(pk=candidate_id, status=SearchCandidate.Status.PENDING).update(
        status=SearchCandidate.Status.RUNNING, worker=worker[:120], heartbeat_at=now,
    ))


def _spec(candidate: SearchCandidate) -> TrialSpec:
    return TrialSpec(genome=candidate.genome, **candidate.train_params)


def _train_and_store(candidate: SearchCandidate, train: Callable[[TrialSpec, int], TrialResult]
                     ) -> TrialResult | None:
    """Train a claimed trial, store its weights and mark it done (or failed); the result when trained."""
    try:
        with Heartbeat(candidate.pk, candidate.worker, model=SearchCandidate):
            result = train(_spec(candidate), candidate.index)
        assert result.module is not None
        name, sha, _ = weights_save(result.module.state_dict(), folder=f"search/run-{candidate.run_id}")
        done = SearchCandidate.objects.filter(pk=candidate.pk, status=SearchCandidate.Status.RUNNING,
                                              worker=candidate.worker).update(
            status=SearchCandidate.Status.DONE, score=result.val_score, latency_ms=result.latency_ms,
            n_parameters=result.n_parameters, seconds=result.seconds, weights_file=name, weights_sha256=sha,
            heartbeat_at=timezone.now(),
        )
        if not done:
            blob_delete(name)
            return None
        return result
    except Exception as exc:  # noqa: BLE001 - a broken trial fails that trial only
        logger.exception("search trial %s failed", candidate.pk)
        SearchCandidate.objects.filter(pk=candidate.pk, status=SearchCandidate.Status.RUNNING).update(
            status=SearchCandidate.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000],
        )
        return None


def search_context(run: ImprovementRun) -> StrategyContext:
    torch_threads_configure()
    baseline = run.baseline_version or version_active(model=run.model)
    if baseline is None:
        raise RuntimeError(f"{run.model} has no active version to improve")
    return context_build(run, baseline, ImprovementConfig.load())


def search_candidate_execute(*, candidate_id: int) -> str:
    """django-q2 entry: train one trial if nobody has claimed it yet."""
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
    _train_and_store(candidate, trial_trainer(context, int(run.params.get("trials_total", n_trials(context)))))
    return "done"


# ------------------------------------------------------------------------------ the runner


class SharedTrialRunner:
    """``TrialRunner`` for a run: the model's persistent study, trials fanned out to every worker."""

    def __init__(self, run: ImprovementRun, context: StrategyContext, reporter: RunReporter) -> None:
        self.run_row = run
        self.context = context
        self.reporter = reporter
        self.objectives = tuple(context.params.get("objectives", ("score",)))
        self.parallel = max(1, int(context.params.get("parallel", DEFAULT_PARALLEL)))
        self.worker = worker_name()
        self.stale_after = timedelta(seconds=settings.PLASTICITY_HEARTBEAT_TIMEOUT)
        self.fraction = 0.05  # the run's progress, for the reports made while a batch trains

    def _resume(self, study: optuna.Study) -> list[SearchCandidate]:
        """A requeued run (its worker vanished) keeps the trials an earlier attempt finished.

        Finished trials (trained, or failed) are answered from their rows and stored weights;
        trials still pending or in training when the worker died are told to the study as
        failed and dropped (a helper still training one finds its row gone and keeps nothing).
        """
        old = SearchCandidate.objects.filter(run=self.run_row)
        finished = (SearchCandidate.Status.DONE, SearchCandidate.Status.FAILED)
        unfinished = old.exclude(status__in=finished)
        for number in unfinished.exclude(trial_number=None).values_list("trial_number", flat=True):
            if number is None:
                continue
            try:
                study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            except (KeyError, ValueError, RuntimeError):
                pass
        for name in unfinished.exclude(weights_file="").values_list("weights_file", flat=True):
            blob_delete(name)
        unfinished.delete()
        return list(old.filter(status__in=finished).order_by("index"))

    def run(self, space: SearchSpace, *, n_trials: int, deadline: float,
            train: Callable[[TrialSpec, int], TrialResult], progress: Callable[[int, int, TrialResult], None],
            ) -> list[TrialResult]:
        run = self.run_row
        study = study_for(run, self.objectives)
        kept = self._resume(study)
        if not study.trials:
            start = genome_params(self.context.genome, space)
            if start is not None:
                study.enqueue_trial(start, skip_if_exists=True)
        ImprovementRun.objects.filter(pk=run.pk).update(params={**run.params, "trials_total": n_trials,
                                                                 "study": study.study_name})
        self.reporter.log(f"search: study {study.study_name} ({len(study.trials)} earlier trials), "
                          f"{n_trials} trials, {self.parallel} at a time")
        results: list[TrialResult] = []
        for row in kept:
            result = self._tell(study, row, None)
            results.append(result)
            progress(len(results), n_trials, result)
        if kept:
            self.reporter.log(f"search resumed: {len(kept)} trial(s) finished by an earlier attempt are kept "
                              f"({sum(r.val_score is not None for r in results)} trained)")
        asked = len(kept)
        batch_number = max((row.generation for row in kept), default=-1) + 1
        next_index = max((row.index for row in kept), default=-1) + 1
        while asked < n_trials and (not results or time.monotonic() < deadline):
            rows: list[SearchCandidate] = []
            for _ in range(min(self.parallel, n_trials - asked)):
                trial = study.ask()
                try:
                    spec = suggest(trial, space)
                except GenomeError as exc:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    self.reporter.log(f"trial {trial.number}: invalid genome ({exc})")
                    continue
                rows.append(SearchCandidate(run=run, generation=batch_number, index=next_index + len(rows),
                                            genome=spec.genome, train_params=spec.train_params(),
                                            trial_number=trial.number))
            asked += self.parallel
            next_index += len(rows)
            batch_number += 1
            if not rows:
                continue
            finished = self._batch(rows, train)
            for row, local in finished:
                result = self._tell(study, row, local)
                results.append(result)
                progress(len(results), n_trials, result)
                self.fraction = search_fraction(len(results), n_trials, search_share(self.context))
        return results

    def _batch(self, rows: list[SearchCandidate], train) -> list[tuple[SearchCandidate, TrialResult | None]]:
        with transaction.atomic():
            created = SearchCandidate.objects.bulk_create(rows)
            ids = list(SearchCandidate.objects.filter(run=self.run_row, index__in=[r.index for r in created])
                       .order_by("index").values_list("pk", flat=True))
            transaction.on_commit(lambda: _enqueue(ids))
        local: dict[int, TrialResult] = {}
        while True:
            pending = list(SearchCandidate.objects.filter(pk__in=ids, status=SearchCandidate.Status.PENDING)
                           .values_list("pk", flat=True))
            for candidate_id in pending:
                if _claim(candidate_id, self.worker):
                    result = _train_and_store(SearchCandidate.objects.get(pk=candidate_id), train)
                    if result is not None:
                        local[candidate_id] = result
                    break
            else:
                _reclaim_stale(ids, self.stale_after)
            current = list(SearchCandidate.objects.filter(pk__in=ids).order_by("index"))
            done = sum(r.status in (SearchCandidate.Status.DONE, SearchCandidate.Status.FAILED) for r in current)
            self.reporter(self.fraction, f"search: batch of {len(current)}, {done} trained "
                                         f"({len({r.worker for r in current if r.worker})} worker(s))")
            if done == len(current):
                return [(row, local.get(row.pk)) for row in current]
            if not pending:
                time.sleep(POLL_S)

    def _tell(self, study: optuna.Study, row: SearchCandidate, local: TrialResult | None) -> TrialResult:
        spec = _spec(row)
        number = row.trial_number if row.trial_number is not None else -1
        if row.status != SearchCandidate.Status.DONE:
            study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            return TrialResult(number=number, spec=spec, val_score=None, error=row.error or "failed")
        result = TrialResult(number=number, spec=spec, val_score=row.score,
                             latency_ms=row.latency_ms, n_parameters=row.n_parameters, seconds=row.seconds or 0.0,
                             module=local.module if local is not None else None, load_module=_loader(row))
        study.tell(number, result.values(self.objectives), skip_if_finished=True)
        return result


def _enqueue(ids: list[int]) -> None:
    for candidate_id in ids:
        async_task("improvement.tasks.evaluate_search_candidate", candidate_id,
                   task_name=f"search-candidate-{candidate_id}", group="search")


def _reclaim_stale(ids: list[int], stale_after: timedelta) -> None:
    cutoff = timezone.now() - stale_after
    SearchCandidate.objects.filter(pk__in=ids, status=SearchCandidate.Status.RUNNING,
                                   heartbeat_at__lt=cutoff).update(status=SearchCandidate.Status.PENDING, worker="")


def _loader(row: SearchCandidate) -> Callable[[], torch.nn.Module]:
    def load() -> torch.nn.Module:
        module = build_module(row.genome)
        module.load_state_dict(weights_load(row.weights_file, sha256=row.weights_sha256))
        return module.eval()

    return load


__all__ = ["SharedTrialRunner", "optuna_storage_url", "search_candidate_execute", "study_for", "study_storages_close"]
