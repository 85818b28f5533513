"""The model and run lists (/models/, /runs/): filters, search, sort, pages, bad values, access, query count.

Actors: bob (viewer) reads; an anonymous visitor is sent to the login page. Expected rows are
computed from the database with plain ORM filters, never written out by hand.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from improvement.choices import RunOrigin, RunStatus
from improvement.models import ImprovementRun
from models_registry.models import ModelVersion, NeuralModel
from models_registry.services import model_create, task_create_from_upload
from tests.factories import blobs_csv, version_with_score

pytestmark = pytest.mark.django_db

RUNS = reverse("panel:runs")
MODELS = reverse("panel:models")
STRATEGIES = ["training", "optimization", "architecture", "distillation"]
STATUSES = list(RunStatus.values)
ORIGINS = list(RunOrigin.values)


@pytest.fixture
def fleet(db) -> dict:
    """Two tasks, three models; versions made by runs and not; 24 runs of every kind, over 24 days."""
    alpha, beta = (task_create_from_upload(name=name, filename=f"{name}.csv", content=blobs_csv(n=90, seed=seed),
                                           evaluate_algorithm=False) for seed, name in enumerate(("alpha", "beta")))
    first, second, solo = (model_create(task=alpha, name="first"), model_create(task=alpha, name="second"),
                           model_create(task=beta, name="solo"))
    first_v1 = version_with_score(first, 0.6)
    second_v1 = version_with_score(second, 0.7)
    solo_v1 = version_with_score(solo, 0.5)
    first_v2 = version_with_score(first, 0.8)  # made by a loop training run (below)
    solo_v2 = version_with_score(solo, 0.9)  # made by an operator's distillation run (below)
    now = timezone.now()
    runs = []
    models = [first, second, solo]
    for i in range(24):
        runs.append(ImprovementRun(
            model=models[i % 3], strategy=STRATEGIES[i % 4], status=STATUSES[i % 6], origin=ORIGINS[i % 3],
            gain=None if i % 5 == 0 else round((i - 10) / 100, 3), progress=(i % 6) / 5,
            decision=f"decision {i}: " + ("needle in the haystack" if i in (3, 17) else "ordinary"),
            trigger_reason=f"trigger {i}",
        ))
    ImprovementRun.objects.bulk_create(runs)
    runs = list(ImprovementRun.objects.order_by("id"))
    for i, run in enumerate(runs):  # one a day, the newest today
        ImprovementRun.objects.filter(pk=run.pk).update(created_at=now - timedelta(days=23 - i))
    ImprovementRun.objects.create(model=first, strategy="training", status=RunStatus.PROMOTED,
                                  origin=RunOrigin.LOOP, result_version=first_v2, gain=0.25,
                                  decision="promoted: made first v2")
    ImprovementRun.objects.create(model=solo, strategy="distillation", status=RunStatus.PROMOTED,
                                  origin=RunOrigin.OPERATOR, result_version=solo_v2, gain=0.5,
                                  decision="promoted: made solo v2")
    return {"alpha": alpha, "beta": beta, "first": first, "second": second, "solo": solo,
            "versions": [first_v1, second_v1, solo_v1, first_v2, solo_v2], "now": now}


def run_ids(response) -> list[int]:
    return [int(i) for i in re.findall(r'data-run-row="(\d+)"', response.content.decode())]


def model_ids(response) -> list[int]:
    return [int(i) for i in re.findall(r'data-model-row="(\d+)"', response.content.decode())]


def problems(response) -> str:
    match = re.search(r'<ul class="messages" id="list-problems".*?</ul>', response.content.decode(), re.S)
    return match.group(0) if match else ""


def ids_of(qs) -> set[int]:
    return set(qs.values_list("id", flat=True))


# ------------------------------------------------------------------------------ access


def test_anonymous_visitors_are_sent_to_the_login_page(client):
    for url in (RUNS, MODELS, RUNS + "?status=running"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login") + "?next=")


def test_a_viewer_reads_both_lists_and_the_top_bar_links_them(fleet, viewer_client):
    for url, page in ((RUNS, "runs"), (MODELS, "models")):
        response = viewer_client.get(url)
        assert response.status_code == 200
        html = response.content.decode()
        assert f'href="{RUNS}"' in html and f'href="{MODELS}"' in html
        assert f'href="{url}" class="current"' in html
        assert f'data-page="{page}"' in html and "data-last-event-id" in html
        assert "data-control=" not in html.replace('data-control="filter"', "")  # no operator control
    assert set(run_ids(viewer_client.get(RUNS + "?per_page=200"))) == ids_of(ImprovementRun.objects.all())
    assert set(model_ids(viewer_client.get(MODELS))) == ids_of(NeuralModel.objects.all())


def test_list_pages_accept_only_get(fleet, operator_client):
    assert operator_client.post(RUNS).status_code == 405
    assert operator_client.post(MODELS).status_code == 405


# ------------------------------------------------------------------------------ runs: filters and search


@pytest.mark.parametrize(("param", "lookup", "values"), [
    ("status", "status", STATUSES), ("strategy", "strategy", STRATEGIES), ("origin", "origin", ORIGINS),
])
def test_runs_filter_by_status_strategy_and_origin(fleet, viewer_client, param, lookup, values):
    for value in values:
        response = viewer_client.get(RUNS, {param: value, "per_page": 200})
        assert response.status_code == 200
        expected = ids_of(ImprovementRun.objects.filter(**{lookup: value}))
        assert expected, value
        assert set(run_ids(response)) == expected, value
        assert problems(response) == ""


def test_runs_filter_by_task_and_model_and_combined(fleet, viewer_client):
    response = viewer_client.get(RUNS, {"task": "beta", "per_page": 200})
    assert set(run_ids(response)) == ids_of(ImprovementRun.objects.filter(model__task__slug="beta"))
    second = fleet["second"]
    response = viewer_client.get(RUNS, {"model": second.pk, "per_page": 200})
    assert set(run_ids(response)) == ids_of(ImprovementRun.objects.filter(model=second))
    response = viewer_client.get(RUNS, {"task": "alpha", "status": "failed", "origin": "loop", "per_page": 200})
    expected = ids_of(ImprovementRun.objects.filter(model__task__slug="alpha", status="failed", origin="loop"))
    assert set(run_ids(response)) == expected


def test_runs_filter_by_creation_date_includes_both_days(fleet, viewer_client):
    today = timezone.localdate(fleet["now"])
    since, until = today - timedelta(days=9), today - timedelta(days=4)
    response = viewer_client.get(RUNS, {"since": since.isoformat(), "until": until.isoformat(), "per_page": 200})
    expected = {r.pk for r in ImprovementRun.objects.all()
                if since <= timezone.localdate(r.created_at) <= until}
    assert len(expected) == 6  # one run a day
    assert set(run_ids(response)) == expected


def test_runs_search_matches_model_task_decision_and_run_number(fleet, viewer_client):
    response = viewer_client.get(RUNS, {"q": "NEEDLE in the", "per_page": 200})
    assert set(run_ids(response)) == ids_of(ImprovementRun.objects.filter(decision__icontains="needle"))
    assert len(run_ids(response)) == 2
    response = viewer_client.get(RUNS, {"q": "solo", "per_page": 200})
    assert set(run_ids(response)) == ids_of(ImprovementRun.objects.filter(model__name="solo"))
    response = viewer_client.get(RUNS, {"q": "beta", "per_page": 200})
    assert set(run_ids(response)) == ids_of(ImprovementRun.objects.filter(model__task__slug="beta"))
    some = ImprovementRun.objects.order_by("id")[5]
    assert some.pk in run_ids(viewer_client.get(RUNS, {"q": f"#{some.pk}"}))
    response = viewer_client.get(RUNS, {"q": "no run says this"})
    assert run_ids(response) == [] and "No run matches these filters" in response.content.decode()


# ------------------------------------------------------------------------------ runs: sort


def test_runs_sort_by_a_column_either_way_with_empty_values_last(fleet, viewer_client):
    runs = list(ImprovementRun.objects.all())
    with_gain = [r for r in runs if r.gain is not None]
    ascending = run_ids(viewer_client.get(RUNS, {"sort": "gain", "per_page": 200}))
    assert [ImprovementRun.objects.get(pk=i).gain for i in ascending[:len(with_gain)]] == sorted(r.gain for r in with_gain)
    assert all(ImprovementRun.objects.get(pk=i).gain is None for i in ascending[len(with_gain):])
    descending = run_ids(viewer_client.get(RUNS, {"sort": "-gain", "per_page": 200}))
    assert [ImprovementRun.objects.get(pk=i).gain for i in descending[:len(with_gain)]] == sorted(
        (r.gain for r in with_gain), reverse=True)
    by_created = run_ids(viewer_client.get(RUNS, {"sort": "created", "per_page": 200}))
    assert by_created == [r.pk for r in sorted(runs, key=lambda r: (r.created_at, -r.pk))]
    default = run_ids(viewer_client.get(RUNS, {"per_page": 200}))
    assert default == [r.pk for r in sorted(runs, key=lambda r: (r.created_at, r.pk), reverse=True)]


def test_column_headers_link_to_the_other_direction_and_keep_the_filters(fleet, viewer_client):
    html = viewer_client.get(RUNS, {"status": "failed", "sort": "gain", "page": "1"}).content.decode()
    gain_header = re.search(r'<th aria-sort="ascending"><a href="([^"]+)"', html)
    assert gain_header, "the sorted column says so"
    link = gain_header.group(1).replace("&amp;", "&")
    assert "sort=-gain" in link and "status=failed" in link and "page=" not in link
    assert set(run_ids(viewer_client.get(RUNS + link))) == ids_of(ImprovementRun.objects.filter(status="failed"))


@pytest.mark.parametrize("sort", ["password", "-model__task__name", "model__name", "gain; DROP TABLE", "--gain"])
def test_a_sort_outside_the_whitelist_is_refused_with_a_message(fleet, viewer_client, sort):
    response = viewer_client.get(RUNS, {"sort": sort, "per_page": 200})
    assert response.status_code == 200
    assert "Sort: Cannot sort by" in problems(response) and "The default order is used." in problems(response)
    runs = ImprovementRun.objects.all()
    assert run_ids(response) == [r.pk for r in sorted(runs, key=lambda r: (r.created_at, r.pk), reverse=True)]


# ------------------------------------------------------------------------------ pages


def test_pages_split_the_rows_and_page_sizes_are_bounded(fleet, viewer_client):
    total = ImprovementRun.objects.count()
    everything = run_ids(viewer_client.get(RUNS, {"per_page": 200}))
    assert len(everything) == total == 26
    pages = [run_ids(viewer_client.get(RUNS, {"per_page": 10, "page": n})) for n in (1, 2, 3)]
    assert [len(p) for p in pages] == [10, 10, 6]
    assert sum(pages, []) == everything
    html = viewer_client.get(RUNS, {"per_page": 10, "page": 2, "status": ""}).content.decode()
    assert "rows 11–20 of 26" in html and 'rel="next"' in html and 'rel="prev"' in html

    small = viewer_client.get(RUNS, {"per_page": 3})
    assert len(run_ids(small)) == 10 and "between 10 and 200; showing 10" in problems(small)
    large = viewer_client.get(RUNS, {"per_page": 100000})
    assert len(run_ids(large)) == total and "showing 200" in problems(large)
    word = viewer_client.get(RUNS, {"per_page": "lots"})
    assert len(run_ids(word)) == 25 and "not a number" in problems(word)


@pytest.mark.parametrize(("page", "shown", "message"), [
    ("999", 3, "There is no page 999; showing page 3 of 3"), ("0", 1, "showing page 1"),
    ("two", 1, "is not a page number"),
])
def test_a_page_that_does_not_exist_shows_the_nearest_with_a_message(fleet, viewer_client, page, shown, message):
    response = viewer_client.get(RUNS, {"per_page": 10, "page": page})
    assert response.status_code == 200
    assert message in problems(response)
    expected = run_ids(viewer_client.get(RUNS, {"per_page": 10, "page": shown}))
    assert run_ids(response) == expected


# ------------------------------------------------------------------------------ bad values


@pytest.mark.parametrize(("params", "label"), [
    ({"status": "exploded"}, "Status"), ({"strategy": "magic"}, "Strategy"), ({"origin": "aliens"}, "Origin"),
    ({"task": "no-such-task"}, "Task"), ({"model": "abc"}, "Model"), ({"model": "999999"}, "Model"),
    ({"since": "yesterday"}, "From"), ({"until": "2024-13-45"}, "To"),
])
def test_a_bad_filter_value_gives_the_page_with_a_message_and_no_filter(fleet, viewer_client, params, label):
    response = viewer_client.get(RUNS, {**params, "per_page": 200})
    assert response.status_code == 200
    text = problems(response)
    assert f"{label}:" in text and "This filter was not applied." in text
    assert set(run_ids(response)) == ids_of(ImprovementRun.objects.all())


def test_an_inverted_date_range_drops_its_end_with_a_message(fleet, viewer_client):
    today = timezone.localdate(fleet["now"])
    since, until = today - timedelta(days=2), today - timedelta(days=5)
    response = viewer_client.get(RUNS, {"since": since.isoformat(), "until": until.isoformat(), "per_page": 200})
    assert "To: The end of the date range is before its start." in problems(response)
    expected = {r.pk for r in ImprovementRun.objects.all() if timezone.localdate(r.created_at) >= since}
    assert len(expected) == 5  # the last three days' runs and the two made today
    assert set(run_ids(response)) == expected


def test_a_bad_value_in_the_models_list_gives_the_page_with_a_message(fleet, viewer_client):
    for params in ({"status": "sleeping"}, {"origin": "nowhere"}, {"sort": "task__algorithm_path"},
                   {"since": "31/12/2024"}, {"per_page": "-5"}):
        response = viewer_client.get(MODELS, params)
        assert response.status_code == 200, params
        assert problems(response), params
        assert set(model_ids(response)) == ids_of(NeuralModel.objects.all()), params


# ------------------------------------------------------------------------------ models


def test_models_filter_by_task_strategy_origin_status_and_search(fleet, viewer_client):
    first, second, solo = fleet["first"], fleet["second"], fleet["solo"]
    assert set(model_ids(viewer_client.get(MODELS, {"task": "alpha"}))) == {first.pk, second.pk}
    # How the active version came to be: a loop's training run, an operator's distillation, or no run.
    assert model_ids(viewer_client.get(MODELS, {"strategy": "training"})) == [first.pk]
    assert model_ids(viewer_client.get(MODELS, {"strategy": "distillation"})) == [solo.pk]
    assert model_ids(viewer_client.get(MODELS, {"origin": "operator"})) == [solo.pk]
    assert model_ids(viewer_client.get(MODELS, {"origin": "initial"})) == [second.pk]
    in_flight = {m.pk for m in NeuralModel.objects.all()
                 if m.improvement_runs.filter(status__in=["queued", "running"]).exists()}
    assert in_flight and in_flight != {first.pk, second.pk, solo.pk}
    assert set(model_ids(viewer_client.get(MODELS, {"status": "improving"}))) == in_flight
    assert set(model_ids(viewer_client.get(MODELS, {"status": "idle"}))) == {first.pk, second.pk, solo.pk} - in_flight
    assert model_ids(viewer_client.get(MODELS, {"q": "SECOND"})) == [second.pk]
    assert set(model_ids(viewer_client.get(MODELS, {"q": "beta"}))) == {solo.pk}


def test_models_filter_by_the_active_versions_date(fleet, viewer_client):
    solo_v2 = fleet["versions"][4]
    old = fleet["now"] - timedelta(days=30)
    ModelVersion.objects.filter(pk=solo_v2.pk).update(created_at=old)
    day = timezone.localdate(old).isoformat()
    assert model_ids(viewer_client.get(MODELS, {"since": day, "until": day})) == [fleet["solo"].pk]
    recent = (timezone.localdate(fleet["now"]) - timedelta(days=1)).isoformat()
    assert set(model_ids(viewer_client.get(MODELS, {"since": recent}))) == {fleet["first"].pk, fleet["second"].pk}


def test_models_sort_by_the_active_score_and_show_what_made_it(fleet, viewer_client):
    response = viewer_client.get(MODELS, {"sort": "-score"})
    expected = sorted(NeuralModel.objects.all(), key=lambda m: m.versions.get(is_active=True).score, reverse=True)
    assert model_ids(response) == [m.pk for m in expected]
    html = response.content.decode()
    made = ImprovementRun.objects.get(result_version=fleet["versions"][4])
    assert f'href="{reverse("panel:run", args=[made.pk])}">distillation</a>' in html
    row = re.search(rf'data-model-row="{fleet["second"].pk}">.*?</tr>', html, re.S).group(0)
    assert "first version" in row
    runs_link = f'href="{RUNS}?model={fleet["second"].pk}"'
    assert runs_link in html


# ------------------------------------------------------------------------------ queries


def _queries(client, url: str, params: dict) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url, params).status_code == 200
    return len(captured)


def test_the_number_of_queries_does_not_grow_with_the_rows(fleet, viewer_client, django_assert_max_num_queries):
    models = list(NeuralModel.objects.all())
    ImprovementRun.objects.bulk_create([
        ImprovementRun(model=models[i % 3], strategy=STRATEGIES[i % 4], status=STATUSES[i % 6], gain=0.01 * i,
                       decision=f"bulk {i}") for i in range(40)])
    for i in range(8):  # more models, each with an active version, for the models list
        version_with_score(model_create(task=fleet["alpha"], name=f"extra-{i}"), 0.5 + i / 100)
    viewer_client.get(RUNS)  # the session's first request loads the user once; count the steady state
    with django_assert_max_num_queries(10):
        response = viewer_client.get(RUNS, {"per_page": 50})
    assert len(run_ids(response)) == 50
    with django_assert_max_num_queries(10):
        response = viewer_client.get(MODELS, {"per_page": 50})
    assert len(model_ids(response)) == 11
    assert _queries(viewer_client, RUNS, {"per_page": 10}) == _queries(viewer_client, RUNS, {"per_page": 50})
    assert _queries(viewer_client, MODELS, {"per_page": 10, "page": 2}) == _queries(viewer_client, MODELS, {"per_page": 50})


# ------------------------------------------------------------------------------ links out


def test_the_runs_list_links_its_filtered_export_and_the_footer_links_the_api(fleet, viewer_client):
    html = viewer_client.get(RUNS, {"status": "failed", "strategy": "training"}).content.decode()
    link = re.search(r'<a href="([^"]+)" data-export="csv">CSV</a>', html).group(1).replace("&amp;", "&")
    assert link.startswith(reverse("export") + "?")
    exported = viewer_client.get(link)
    assert exported.status_code == 200 and exported["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert {int(r["id"]) for r in rows} == ids_of(ImprovementRun.objects.filter(status="failed", strategy="training"))
    link = re.search(r'<a href="([^"]+)" data-export="json">JSON</a>', html).group(1).replace("&amp;", "&")
    exported = viewer_client.get(link, HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")  # as a browser asks
    assert exported.status_code == 200 and exported["Content-Type"].startswith("application/json")
    assert {r["id"] for r in json.loads(b"".join(exported.streaming_content))} == ids_of(
        ImprovementRun.objects.filter(status="failed", strategy="training"))
    for name in ("api-docs", "api-redoc", "api-schema"):
        assert f'href="{reverse(name)}"' in html
        assert viewer_client.get(reverse(name)).status_code == 200, name
    overview = viewer_client.get(reverse("overview")).content.decode()
    assert f'href="{RUNS}" data-link="all-runs">All runs →</a>' in overview
