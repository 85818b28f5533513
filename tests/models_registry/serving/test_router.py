"""The router: routes follow the serving state and the active version; the hot path stays in memory."""

from __future__ import annotations

import time

import numpy as np
import pytest
from django.core.files.storage import default_storage

from models_registry import implementations
from models_registry.implementations import algorithm_predict_fn, version_predict_fn
from models_registry.services import version_activate
from models_registry.serving import router as router_module
from models_registry.serving.choices import SwitchReason
from models_registry.serving.models import ServingState
from models_registry.serving.predict import serving_predict, serving_runtime_reset
from models_registry.serving.router import (
    ServingRouter,
    ServingUnavailable,
    TaskNotFound,
    _load_rows,
    route_resolve,
    serving_router,
)
from models_registry.serving.switching import ALGORITHMIC, NEURAL, serving_switch
from tests.factories import csv_task
from tests.models_registry.serving.helpers import blobs_inputs

pytestmark = pytest.mark.django_db

X = np.asarray(blobs_inputs(16), dtype=np.float32)


def _route(slug: str):
    router = serving_router()
    router.invalidate()  # the on-commit invalidation does not run inside a test transaction
    return router.route(slug)


def test_a_task_without_serving_state_is_served_by_its_algorithm(served_task):
    task, *_ = served_task
    route = _route(task.slug)
    assert route.implementation == ALGORITHMIC and route.version is None
    np.testing.assert_array_equal(route.predict(X), algorithm_predict_fn(task)(X))


def test_routing_follows_the_serving_switch_and_the_version(served_task):
    task, model, v1, v2 = served_task
    serving_switch(task=task, implementation=NEURAL, version=v2, reason=SwitchReason.OPERATOR)
    route = _route(task.slug)
    assert (route.implementation, route.version.pk) == (NEURAL, v2.pk)
    np.testing.assert_array_equal(route.predict(X), version_predict_fn(v2)(X).argmax(axis=1))

    # A rollback: the state still names v2, which is no longer active; the router serves the
    # active version at once, before any re-evaluation has run.
    version_activate(version=v1, reason="rollback")
    route = _route(task.slug)
    assert (route.implementation, route.version.pk) == (NEURAL, v1.pk)
    np.testing.assert_array_equal(route.predict(X), version_predict_fn(v1)(X).argmax(axis=1))

    serving_switch(task=task, implementation=ALGORITHMIC, reason=SwitchReason.OPERATOR)
    assert _route(task.slug).implementation == ALGORITHMIC


def test_the_table_is_reread_at_most_every_refresh_interval(served_task, monkeypatch):
    task, model, v1, v2 = served_task
    clock = [1000.0]  # the router's clock, moved by the test: no dependence on the machine's speed
    monkeypatch.setattr(router_module.time, "monotonic", lambda: clock[0])
    router = ServingRouter(refresh_s=0.2, background=False)
    router.route(task.slug)
    refreshes = router.refreshes
    for _ in range(200):
        router.route(task.slug)
        clock[0] += 0.0009  # 200 lookups within 0.18 s: no re-read
    assert router.refreshes == refreshes  # not per request
    serving_switch(task=task, implementation=NEURAL, version=v2, reason=SwitchReason.OPERATOR)
    assert router.route(task.slug).implementation != NEURAL  # the table is still fresh
    clock[0] += 0.03  # past the interval
    assert router.route(task.slug).implementation == NEURAL
    assert router.refreshes == refreshes + 1


def test_the_hot_path_reads_no_database_and_no_file(served_task, django_assert_num_queries, monkeypatch):
    task, model, v1, v2 = served_task
    serving_switch(task=task, implementation=NEURAL, version=v2, reason=SwitchReason.OPERATOR)
    router = ServingRouter(refresh_s=60.0, background=False)
    router.route(task.slug)  # warm: loads the version

    def no_file(*args, **kwargs):
        raise AssertionError("file read on the hot path")

    for name in ("weights_load", "blob_load", "dataset_load"):
        monkeypatch.setattr(implementations, name, no_file)
    with django_assert_num_queries(0):
        for _ in range(50):
            route = router.route(task.slug)
            prediction = serving_predict(route=route, X=X[:1])
    assert prediction.route.version.pk == v2.pk and prediction.outputs.shape == (1,)


def test_a_changed_route_loads_off_the_request_path(served_task):
    task, model, v1, v2 = served_task
    serving_switch(task=task, implementation=NEURAL, version=v2, reason=SwitchReason.OPERATOR)
    router = ServingRouter(refresh_s=0.0, background=True)
    assert router.route(task.slug).version.pk == v2.pk  # first route: loaded inline
    implementations.caches_clear()  # v1 must really be loaded from its files
    version_activate(version=v1, reason="rollback")
    first = router.route(task.slug)
    assert first.version.pk == v2.pk  # v2 answers while v1 loads on the loader thread
    deadline = time.monotonic() + 10
    while router.route(task.slug).version.pk != v1.pk:
        assert time.monotonic() < deadline, "v1 never replaced v2"
        time.sleep(0.01)


def test_a_version_that_fails_to_load_is_replaced_by_the_algorithm(served_task):
    task, model, v1, v2 = served_task
    serving_switch(task=task, implementation=NEURAL, version=v2, reason=SwitchReason.OPERATOR)
    implementations.caches_clear()
    default_storage.delete(v2.weights_file)
    route = _route(task.slug)
    assert route.implementation == ALGORITHMIC
    np.testing.assert_array_equal(route.predict(X), algorithm_predict_fn(task)(X))


def test_unknown_and_unservable_tasks(served_task):
    task, model, v1, v2 = served_task
    with pytest.raises(TaskNotFound):
        _route("no-such-task")
    type(task).objects.filter(pk=task.pk).update(algorithm_path="")
    model.versions.update(is_active=False)
    with pytest.raises(ServingUnavailable, match="no algorithm and no active neural version"):
        _route(task.slug)


def test_route_resolve_prefers_the_named_active_version(served_task):
    task, model, v1, v2 = served_task
    neural = ServingState(task=task, implementation=NEURAL, version=v1)
    assert route_resolve(has_algorithm=True, state=neural, active_versions=[v2, v1]) == (NEURAL, v1)
    # The named version is no longer active: the best active one.
    assert route_resolve(has_algorithm=True, state=neural, active_versions=[v2]) == (NEURAL, v2)
    assert route_resolve(has_algorithm=True, state=neural, active_versions=[]) == (ALGORITHMIC, None)
    assert route_resolve(has_algorithm=True, state=None, active_versions=[v2]) == (ALGORITHMIC, None)
    assert route_resolve(has_algorithm=False, state=None, active_versions=[v2]) == (NEURAL, v2)
    assert route_resolve(has_algorithm=False, state=None, active_versions=[]) == (None, None)


def test_a_database_outage_keeps_the_last_table(served_task):
    task, *_ = served_task
    calls = {"n": 0}

    def flaky_rows():
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("database is away")
        return _load_rows()

    router = ServingRouter(refresh_s=0.0, background=False, rows=flaky_rows)
    assert router.route(task.slug).implementation == ALGORITHMIC
    assert router.route(task.slug).implementation == ALGORITHMIC  # refresh failed: last table answers
    assert calls["n"] == 2
    cold = ServingRouter(refresh_s=0.0, background=False, rows=flaky_rows)
    with pytest.raises(ServingUnavailable, match="cannot be read"):
        cold.route(task.slug)


def test_writes_in_this_process_invalidate_the_table_at_once(served_task, settings):
    task, model, v1, v2 = served_task
    settings.PLASTICITY_SERVING_REFRESH_S = 60.0
    serving_runtime_reset()
    router = serving_router()
    assert router.route(task.slug).implementation == ALGORITHMIC
    other = csv_task(name="other", n=120, seed=5)  # post_save: the next lookup re-reads
    assert router.route(other.slug).task.pk == other.pk
    serving_switch(task=task, implementation=NEURAL, version=v2, reason=SwitchReason.OPERATOR)
    assert router.route(task.slug).version.pk == v2.pk
