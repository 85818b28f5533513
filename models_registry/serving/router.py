"""The active implementation of every task as a predict function, cached in each process.

Every serving process keeps a *route table*: for each task, the implementation that serves
it (a neural version on its runtime, or the algorithm) with its predict function loaded.

* Freshness: the table is re-read from the database (three small queries: tasks, serving
  states, active versions) at most every ``PLASTICITY_SERVING_REFRESH_S`` (0.5 s by
  default), by whichever request first finds it older than that — never per request. A
  promotion, rollback or serving switch committed by *any* process is therefore served
  everywhere within about that long, without a restart; this process's own switches
  invalidate the table at once.
* No file read on the hot path: a route whose key — (task, implementation, version id,
  sha256, runtime) — did not change keeps its loaded function. A changed one is loaded by a
  loader thread (``PLASTICITY_SERVING_BACKGROUND``; inline otherwise, as in tests) while the
  previous route keeps answering; only a task's very first route in a process is loaded
  inline, since nothing else could answer. While neural serves, the task's algorithm is
  loaded ahead on the same thread (it is the stand-in, what shadow checks run, and where a
  switch back goes). Loaded functions come from the per-process caches of
  ``implementations`` (keyed by version id + weights sha256, and by task id + dataset sha256).

Which version serves neural traffic: the one ``ServingState`` names while it is still active;
otherwise (a promotion or rollback whose re-evaluation has not landed yet) the task's best
active version, ordered like ``version_best_in_task``. A task without a ``ServingState`` is
served by its algorithm, or by its best active version when it has no algorithm. A neural
version that fails to load is replaced by the algorithm until it loads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable

import numpy as np
import torch
from django.conf import settings
from django.db import connection
from django.db.models.signals import post_delete, post_save

from models_registry.choices import Implementation, OutputKind
from models_registry.implementations import (
    PredictFn,
    algorithm_params_of,
    algorithm_predict_fn,
    version_predict_fn,
)
from models_registry.models import ModelVersion, Task
from models_registry.serving.conf import serving_setting
from models_registry.serving.models import ServingState

logger = logging.getLogger(__name__)

RETRY_FAILED_LOAD_S = 30.0


class TaskNotFound(LookupError):
    """No task has this slug."""


class ServingUnavailable(RuntimeError):
    """The task exists but nothing can serve it (no algorithm and no active version, or a load failure)."""


class NonFiniteOutputs(RuntimeError):
    """An implementation produced NaN or infinity."""


def outputs_finalise(task: Task, raw: np.ndarray) -> np.ndarray:
    """Raw implementation outputs → predictions: class ids (N,), values (N, k), reconstructions (N, *input_shape)."""
    raw = np.asarray(raw)
    n = raw.shape[0]
    if task.output_kind == OutputKind.CLASSES:
        labels = raw.argmax(axis=1) if raw.ndim == 2 else raw.reshape(n)
        return labels.astype(np.int64, copy=False)
    if task.output_kind == OutputKind.RECONSTRUCTION and raw.size == n * math.prod(task.input_shape):
        out = raw.reshape((n, *task.input_shape))
    else:
        out = raw.reshape(n, -1)
    if not np.isfinite(out).all():
        raise NonFiniteOutputs(f"{task.slug}: the implementation produced NaN or infinity")
    return out


def route_key(task: Task, implementation: str, version: ModelVersion | None) -> tuple:
    """What makes a loaded predict function reusable."""
    if version is not None:
        return (task.pk, implementation, version.pk, version.weights_sha256, version.runtime)
    # The algorithm's tuned settings: a task tuned after its algorithm was loaded reloads it.
    return (task.pk, implementation, None, task.dataset_sha256, task.algorithm_path,
            json.dumps(algorithm_params_of(task), sort_keys=True))


@dataclasses.dataclass(frozen=True)
class Route:
    """One task's serving implementation, ready to run."""

    task: Task
    implementation: str
    version: ModelVersion | None
    shadow_fraction: float
    predict_raw: PredictFn = dataclasses.field(repr=False)

    @property
    def key(self) -> tuple:
        return route_key(self.task, self.implementation, self.version)

    @property
    def version_id(self) -> int | None:
        return self.version.pk if self.version is not None else None

    def predict(self, X: np.ndarray) -> np.ndarray:
        return outputs_finalise(self.task, self.predict_raw(X))


def algorithm_route(task: Task, *, shadow_fraction: float = 0.0) -> Route:
    """The task's algorithm as a route (the stand-in when a neural route fails)."""
    return Route(task=task, implementation=Implementation.ALGORITHMIC, version=None,
                 shadow_fraction=shadow_fraction, predict_raw=algorithm_predict_fn(task))


def _load(task: Task, implementation: str, version: ModelVersion | None) -> PredictFn:
    if implementation == Implementation.NEURAL:
        if version is None:
            raise ValueError(f"{task.slug}: a neural route needs a version")
        return version_predict_fn(version)
    return algorithm_predict_fn(task)


def _best_first(version: ModelVersion) -> tuple:
    # The order of selectors.version_best_in_task: best score first, then the fastest.
    score = version.score if version.score is not None else -math.inf
    p95 = version.latency_p95_ms if version.latency_p95_ms is not None else math.inf
    return (-score, p95, -version.pk)


def route_resolve(
    *, has_algorithm: bool, state: ServingState | None, active_versions: list[ModelVersion]
) -> tuple[str | None, ModelVersion | None]:
    """Which implementation (and neural version) serves, given the state and the active versions.

    ``active_versions`` must be sorted best first. Pure: no database access.
    """
    if state is not None and state.implementation == Implementation.NEURAL and active_versions:
        named = next((v for v in active_versions if v.pk == state.version_id), None)
        return Implementation.NEURAL, named or active_versions[0]
    if has_algorithm:
        return Implementation.ALGORITHMIC, None
    if active_versions:
        return Implementation.NEURAL, active_versions[0]
    return None, None


@dataclasses.dataclass(frozen=True)
class _Table:
    loaded_at: float
    routes: dict[str, Route | None]  # slug -> route; None: the task exists but nothing can serve it
    problems: dict[str, str]


_EMPTY = _Table(loaded_at=-math.inf, routes={}, problems={})

Rows = tuple[list[Task], dict[int, ServingState], list[ModelVersion]]


def _load_rows() -> Rows:
    """Three small queries: every task, every serving state, every active version."""
    tasks = list(Task.objects.all())
    states = {s.task_id: s for s in ServingState.objects.all()}
    actives = list(ModelVersion.objects.filter(is_active=True).select_related("model"))
    return tasks, states, actives


class ServingRouter:
    """The per-process route table, re-read from the database at most every ``refresh_s`` seconds."""

    def __init__(self, *, refresh_s: float = 0.25, background: bool = True,
                 rows: Callable[[], Rows] = _load_rows) -> None:
        self.refresh_s = max(0.0, float(refresh_s))
        self.background = background
        self._rows = rows
        self._table = _EMPTY
        self._lock = threading.Lock()
        self._loaded: dict[tuple, PredictFn] = {}  # filled by the loader thread
        self._failed: dict[tuple, tuple[str, float]] = {}
        self._pending: set[tuple] = set()
        self._warmed: set[tuple] = set()
        self._jobs: queue.Queue = queue.Queue()
        self._loader: threading.Thread | None = None
        self.refreshes = 0

    # ------------------------------------------------------------------ lookups

    def route(self, slug: str) -> Route:
        table = self._current()
        try:
            route = table.routes[slug]
        except KeyError:
            raise TaskNotFound(slug) from None
        if route is None:
            raise ServingUnavailable(table.problems.get(slug, f"{slug}: nothing can serve this task"))
        return route

    def task(self, slug: str) -> Task:
        """The task row as of the last refresh (raises ``TaskNotFound``)."""
        route = self._current().routes.get(slug)
        if route is not None:
            return route.task
        task = Task.objects.filter(slug=slug).first()  # rare: unknown or unservable
        if task is None:
            raise TaskNotFound(slug)
        return task

    def _current(self) -> _Table:
        table = self._table
        if time.monotonic() - table.loaded_at <= self.refresh_s:
            return table
        # Stale: one request re-reads the database; the others keep using the table they have,
        # unless there is none yet.
        if not self._lock.acquire(blocking=table is _EMPTY):
            return table
        try:
            if time.monotonic() - self._table.loaded_at > self.refresh_s:
                try:
                    self._refresh_locked()
                except Exception as exc:  # noqa: BLE001 - the database is away: serve what we know
                    # A connection that failed is not reused (the fast lane's requests run no
                    # request signals, whose handler would otherwise close it).
                    connection.close_if_unusable_or_obsolete()
                    if self._table is _EMPTY:
                        raise ServingUnavailable(f"the serving table cannot be read: {exc}") from exc
                    logger.warning("serving: route table refresh failed (%s); serving the last table", exc)
                    self._table = dataclasses.replace(self._table, loaded_at=time.monotonic())
            return self._table
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ refresh

    def invalidate(self) -> None:
        """Make the next lookup re-read the database (after a local switch or activation commits)."""
        self._table = dataclasses.replace(self._table, loaded_at=-math.inf)

    def refresh(self) -> None:
        with self._lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        tasks, states, actives = self._rows()
        previous = self._table.routes
        routes: dict[str, Route | None] = {}
        problems: dict[str, str] = {}
        by_task: dict[int, list[ModelVersion]] = {}
        for active in actives:
            by_task.setdefault(active.model.task_id, []).append(active)
        for task in tasks:
            state = states.get(task.pk)
            implementation, version = route_resolve(
                has_algorithm=bool(task.algorithm_path), state=state,
                active_versions=sorted(by_task.get(task.pk, []), key=_best_first),
            )
            if implementation is None:
                routes[task.slug] = None
                problems[task.slug] = f"{task.slug}: no algorithm and no active neural version to serve"
                continue
            fraction = state.shadow_fraction if state is not None else 0.0
            routes[task.slug] = self._route_for(task, implementation, version, fraction, previous.get(task.slug),
                                                problems)
            if implementation == Implementation.NEURAL and task.algorithm_path and self.background:
                self._prewarm_algorithm(task)
        wanted = {route.key for route in routes.values() if route is not None}
        for key in [k for k in self._loaded if k not in wanted and k not in self._pending]:
            self._loaded.pop(key, None)  # loaded for a route superseded before it served
        self._table = _Table(loaded_at=time.monotonic(), routes=routes, problems=problems)
        self.refreshes += 1

    def _route_for(self, task: Task, implementation: str, version: ModelVersion | None, fraction: float,
                   old: Route | None, problems: dict[str, str]) -> Route | None:
        key = route_key(task, implementation, version)
        if old is not None and old.key == key:
            predict = old.predict_raw
        elif key in self._loaded:
            predict = self._loaded.pop(key)
        elif key in self._failed and time.monotonic() - self._failed[key][1] < RETRY_FAILED_LOAD_S:
            return self._stand_in(task, fraction, problems, self._failed[key][0])
        elif self.background and old is not None:
            self._load_later(key, task, implementation, version)
            return dataclasses.replace(old, task=task, shadow_fraction=fraction)  # the old one answers meanwhile
        else:
            try:
                predict = _load(task, implementation, version)
            except Exception as exc:  # noqa: BLE001 - one broken version must not stop the others
                logger.exception("serving: cannot load %s for %s", implementation, task.slug)
                self._failed[key] = (str(exc), time.monotonic())
                return self._stand_in(task, fraction, problems, str(exc))
        self._failed.pop(key, None)
        return Route(task=task, implementation=implementation, version=version, shadow_fraction=fraction,
                     predict_raw=predict)

    def _stand_in(self, task: Task, fraction: float, problems: dict[str, str], error: str) -> Route | None:
        problems[task.slug] = f"{task.slug}: the serving implementation failed to load ({error})"[:300]
        if not task.algorithm_path:
            return None
        key = route_key(task, Implementation.ALGORITHMIC, None)
        old = self._table.routes.get(task.slug)
        if old is not None and old.key == key:
            return old
        try:
            return algorithm_route(task)
        except Exception:  # noqa: BLE001
            logger.exception("serving: cannot load the algorithm of %s either", task.slug)
            return None

    # ------------------------------------------------------------------ loader thread

    def _load_later(self, key: tuple, task: Task, implementation: str, version: ModelVersion | None) -> None:
        if key in self._pending:
            return
        self._pending.add(key)
        self._jobs.put((key, task, implementation, version))
        if self._loader is None or not self._loader.is_alive():
            self._loader = threading.Thread(target=self._load_loop, name="serving-loader", daemon=True)
            self._loader.start()

    def _load_loop(self) -> None:
        # Files only (weights, ONNX, dataset): this thread never touches the database.
        while True:
            key, task, implementation, version = self._jobs.get()
            try:
                self._loaded[key] = _load(task, implementation, version)
            except Exception as exc:  # noqa: BLE001
                logger.exception("serving: cannot load %s for %s", implementation, task.slug)
                self._failed[key] = (str(exc), time.monotonic())
            finally:
                self._pending.discard(key)
                self.invalidate()

    def _prewarm_algorithm(self, task: Task) -> None:
        # The algorithm stands in when neural fails, is what shadow checks run and is where a
        # switch back goes: have it fitted (and scikit-learn imported) before it is needed, so
        # that a switch to it is served as fast as any other.
        key = route_key(task, Implementation.ALGORITHMIC, None)
        if key not in self._warmed:
            self._warmed.add(key)
            self._load_later(key, task, Implementation.ALGORITHMIC, None)

    def loads_pending(self) -> int:
        return len(self._pending)


_router: ServingRouter | None = None
_router_lock = threading.Lock()


def serving_router() -> ServingRouter:
    """This process's router, created on first use from the settings."""
    global _router
    router = _router
    if router is None:
        with _router_lock:
            if _router is None:
                _torch_threads_configure()
                _router = ServingRouter(refresh_s=serving_setting("PLASTICITY_SERVING_REFRESH_S"),
                                        background=serving_setting("PLASTICITY_SERVING_BACKGROUND"))
            router = _router
    return router


def _torch_threads_configure() -> None:
    # Requests run on many threads at once; each must not also fan out over every core
    # (a batch of one gains nothing from intra-op threads, and they fight each other).
    threads = getattr(settings, "PLASTICITY_TORCH_THREADS", 1)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def serving_router_invalidate() -> None:
    if _router is not None:
        _router.invalidate()


def serving_router_reset() -> None:
    """Forget this process's router (tests; settings changes)."""
    global _router
    with _router_lock:
        _router = None


def _route_table_stale(sender, **kwargs) -> None:
    """A task, version or serving state was written by this process: re-read the routes at the next request.

    Connected when this module is imported, i.e. whenever a router can exist in the process.
    Other processes notice within ``PLASTICITY_SERVING_REFRESH_S``; bulk ``update()`` calls send no
    signal, and the services that use them invalidate on commit instead.
    """
    serving_router_invalidate()


for _sender in (Task, ModelVersion, ServingState):
    post_save.connect(_route_table_stale, sender=_sender, weak=False, dispatch_uid=f"route-table-stale:{_sender.__name__}")
    post_delete.connect(_route_table_stale, sender=_sender, weak=False,
                        dispatch_uid=f"route-table-stale:{_sender.__name__}")
