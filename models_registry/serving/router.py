"""The active implementation of every task as a predict function, cached in each process.

Every serving process keeps a *route table*: for each task, the implementation that serves
it (a neural version on its runtime, or the algorithm) with its predict function already
loaded. The table is rebuilt from the database at most every ``PLASTICITY_SERVING_REFRESH_S``
(0.25 s by default) — by a background thread in servers, inline in tests and scripts — so a
promotion, rollback or serving switch committed by *any* process is served everywhere
within about that long, without a restart. A request only looks its task up in the table:
no database access and no file read on the hot path. Predict functions come from the
per-process caches of ``implementations`` (keyed by version id + weights sha256, and by task
id + dataset sha256), and a route whose key did not change keeps its function, so a
rebuild loads only what changed.

Which version serves neural traffic: the one ``ServingState`` names while it is still active;
otherwise (a promotion or rollback whose re-evaluation has not landed yet) the task's best
active version, ordered like ``version_best_in_task``. A task without a ``ServingState`` is
served by its algorithm, or by its best active version when it has no algorithm.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from django.db import close_old_connections

from models_registry.choices import Implementation, OutputKind
from models_registry.implementations import PredictFn, algorithm_predict_fn, version_predict_fn
from models_registry.models import ModelVersion, Task
from models_registry.serving.conf import serving_setting
from models_registry.serving.models import ServingState

logger = logging.getLogger(__name__)


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
    if task.output_kind == OutputKind.RECONSTRUCTION:
        out = raw.reshape((n, *task.input_shape)) if raw.size == n * math.prod(task.input_shape) else raw
    else:
        out = raw.reshape(n, -1)
    if not np.isfinite(out).all():
        raise NonFiniteOutputs(f"{task.slug}: the implementation produced NaN or infinity")
    return out


@dataclass(frozen=True)
class Route:
    """One task's serving implementation, ready to run."""

    task: Task
    implementation: str
    version: ModelVersion | None
    shadow_fraction: float
    predict_raw: PredictFn = field(repr=False)

    @property
    def key(self) -> tuple:
        return route_key(self.task, self.implementation, self.version)

    @property
    def version_id(self) -> int | None:
        return self.version.pk if self.version is not None else None

    def predict(self, X: np.ndarray) -> np.ndarray:
        return outputs_finalise(self.task, self.predict_raw(X))


def route_key(task: Task, implementation: str, version: ModelVersion | None) -> tuple:
    """What makes a loaded predict function reusable: (task, implementation, version id, sha, ...)."""
    if version is not None:
        return (task.pk, implementation, version.pk, version.weights_sha256, version.runtime)
    return (task.pk, implementation, None, task.dataset_sha256, task.algorithm_path)


def algorithm_route(task: Task, *, shadow_fraction: float = 0.0) -> Route:
    """The task's algorithm as a route (used as the fallback when a neural route fails)."""
    return Route(task=task, implementation=Implementation.ALGORITHMIC, version=None,
                 shadow_fraction=shadow_fraction, predict_raw=algorithm_predict_fn(task))


def _score_order(version: ModelVersion) -> tuple:
    # Same order as selectors.version_best_in_task: best score first, then the fastest.
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


@dataclass(frozen=True)
class _Table:
    loaded_at: float
    routes: dict[str, Route | None]  # slug -> route; None: the task exists but nothing can serve it
    problems: dict[str, str]


_STALE = _Table(loaded_at=-math.inf, routes={}, problems={})


class ServingRouter:
    """The per-process route table, refreshed from the database every ``refresh_s`` seconds."""

    def __init__(self, *, refresh_s: float, background: bool,
                 loader: Callable[[], tuple] | None = None) -> None:
        self.refresh_s = max(0.01, float(refresh_s))
        self.background = background
        # A background table older than this means its thread is stuck: refresh inline then.
        self._max_age = self.refresh_s if not background else max(1.0, 4 * self.refresh_s)
        self._table = _STALE
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loader = loader or _load_rows
        self.refreshes = 0

    # ------------------------------------------------------------------ hot path

    def route(self, slug: str) -> Route:
        table = self._table
        if time.monotonic() - table.loaded_at > self._max_age:
            table = self._refresh_if_stale()
        if self.background and (self._thread is None or not self._thread.is_alive()):
            self._start_thread()
        try:
            route = table.routes[slug]
        except KeyError:
            raise TaskNotFound(slug) from None
        if route is None:
            raise ServingUnavailable(table.problems.get(slug, f"{slug}: nothing can serve this task"))
        return route

    def task(self, slug: str) -> Task:
        """The task row as of the last refresh (raises ``TaskNotFound``)."""
        table = self._table
        if time.monotonic() - table.loaded_at > self._max_age:
            table = self._refresh_if_stale()
        route = table.routes.get(slug)
        if route is not None:
            return route.task
        if slug in table.routes:  # exists but unservable: load the row (rare)
            task = Task.objects.filter(slug=slug).first()
            if task is not None:
                return task
        raise TaskNotFound(slug)

    # ------------------------------------------------------------------ refresh

    def invalidate(self) -> None:
        """Make the next lookup see the database (called after a local switch or activation commits)."""
        if self.background and self._thread is not None and self._thread.is_alive():
            self._wake.set()
        else:
            self._table = _STALE

    def refresh(self) -> None:
        with self._lock:
            self._refresh_locked()

    def _refresh_if_stale(self) -> _Table:
        with self._lock:
            if time.monotonic() - self._table.loaded_at > self._max_age:
                self._refresh_locked()
            return self._table

    def _refresh_locked(self) -> None:
        tasks, states, actives = self._loader()
        previous = self._table.routes
        routes: dict[str, Route | None] = {}
        problems: dict[str, str] = {}
        by_task: dict[int, list[ModelVersion]] = {}
        for version in actives:
            by_task.setdefault(version.model.task_id, []).append(version)
        for task in tasks:
            versions = sorted(by_task.get(task.pk, []), key=_score_order)
            state = states.get(task.pk)
            implementation, version = route_resolve(
                has_algorithm=bool(task.algorithm_path), state=state, active_versions=versions
            )
            fraction = state.shadow_fraction if state is not None else 0.0
            if implementation is None:
                routes[task.slug] = None
                problems[task.slug] = f"{task.slug}: no algorithm and no active neural version to serve"
                continue
            try:
                routes[task.slug] = self._build(task, implementation, version, fraction, previous.get(task.slug))
            except Exception as exc:  # noqa: BLE001 - one broken version must not stop the others
                logger.exception("serving: cannot load %s for %s", implementation, task.slug)
                routes[task.slug] = self._fallback(task, fraction, problems, exc)
        self._table = _Table(loaded_at=time.monotonic(), routes=routes, problems=problems)
        self.refreshes += 1

    @staticmethod
    def _build(task: Task, implementation: str, version: ModelVersion | None, fraction: float,
               old: Route | None) -> Route:
        if old is not None and old.key == route_key(task, implementation, version):
            predict = old.predict_raw  # unchanged: keep the loaded function
        elif version is not None:
            predict = version_predict_fn(version)
        else:
            predict = algorithm_predict_fn(task)
        return Route(task=task, implementation=implementation, version=version, shadow_fraction=fraction,
                     predict_raw=predict)

    @staticmethod
    def _fallback(task: Task, fraction: float, problems: dict[str, str], exc: Exception) -> Route | None:
        problems[task.slug] = f"{task.slug}: the serving implementation failed to load ({exc})"[:300]
        if not task.algorithm_path:
            return None
        try:
            return algorithm_route(task)
        except Exception:  # noqa: BLE001
            logger.exception("serving: cannot load the algorithm of %s either", task.slug)
            return None

    # ------------------------------------------------------------------ background thread

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="serving-router", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.refresh_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - keep serving the last table; retry next tick
                logger.exception("serving: route table refresh failed")
            finally:
                close_old_connections()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None


def _load_rows() -> tuple[list[Task], dict[int, ServingState], list[ModelVersion]]:
    """Three small queries: every task, every serving state, every active version."""
    tasks = list(Task.objects.all())
    states = {s.task_id: s for s in ServingState.objects.all()}
    actives = list(ModelVersion.objects.filter(is_active=True).select_related("model"))
    return tasks, states, actives


_router: ServingRouter | None = None
_router_lock = threading.Lock()


def serving_router() -> ServingRouter:
    """This process's router, created on first use from the settings."""
    global _router
    router = _router
    if router is None:
        with _router_lock:
            if _router is None:
                _router = ServingRouter(
                    refresh_s=serving_setting("PLASTICITY_SERVING_REFRESH_S"),
                    background=serving_setting("PLASTICITY_SERVING_BACKGROUND"),
                )
            router = _router
    return router


def serving_router_invalidate() -> None:
    if _router is not None:
        _router.invalidate()


def serving_router_reset() -> None:
    """Drop this process's router (tests; settings changes)."""
    global _router
    with _router_lock:
        if _router is not None:
            _router.stop()
        _router = None
