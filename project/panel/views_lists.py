"""The model and run lists (``/models/``, ``/runs/``): read-only pages for any logged-in user.

Everything a list shows is in its query string (filters, search, sort, page, page size), so a
filtered view is a link to share, and the filter form is a plain GET form that works without
JavaScript. A value that does not validate is left out of the query and explained above the list.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, QueryDict
from django.urls import reverse
from django.views.decorators.http import require_GET

from project.panel import selectors_lists as lists
from project.panel.forms_lists import (
    PER_PAGE_CHOICES,
    PER_PAGE_DEFAULT,
    PER_PAGE_MAX,
    PER_PAGE_MIN,
    ListForm,
    ModelListForm,
    RunListForm,
)
from project.panel.views import page

#: (sort key or None, header, first direction): numbers and dates sort largest/newest first.
RUN_COLUMNS = [
    ("id", "#", "-"), ("created", "Created", "-"), ("task", "Task", ""), ("model", "Model", ""),
    ("strategy", "Strategy", ""), ("origin", "Origin", ""), ("status", "Status", ""), (None, "Progress", ""),
    ("gain", "Gain", "-"), (None, "Decision", ""), ("finished", "Finished", "-"),
]
MODEL_COLUMNS = [
    ("task", "Task", ""), ("model", "Model", ""), ("version", "Active", "-"), ("score", "Gate score", "-"),
    ("test", "Test score", "-"), ("latency", "p95 latency (ms)", ""), ("params", "Parameters", ""),
    (None, "Made by", ""), ("since", "Active since", "-"), ("versions", "Versions", "-"),
    ("in_flight", "Runs in flight", "-"),
]


def query_with(params: QueryDict, **changes: object) -> str:
    """``params`` without its empty values, with ``changes`` applied (None removes a key), as ``?...``."""
    query = QueryDict(mutable=True)
    for key, values in params.lists():
        kept = [v for v in values if v != ""]
        if kept:
            query.setlist(key, kept)
    for key, value in changes.items():
        if value is None or value == "":
            query.pop(key, None)
        else:
            query[key] = str(value)
    return f"?{query.urlencode()}"


def per_page_of(raw: str | None) -> tuple[int, str]:
    """The page size asked for, bounded to [PER_PAGE_MIN, PER_PAGE_MAX], and why it was changed."""
    if not raw:
        return PER_PAGE_DEFAULT, ""
    try:
        asked = int(raw)
    except ValueError:
        return PER_PAGE_DEFAULT, f"Rows per page: {raw!r} is not a number; showing {PER_PAGE_DEFAULT}."
    bounded = min(max(asked, PER_PAGE_MIN), PER_PAGE_MAX)
    if bounded != asked:
        return bounded, f"Rows per page must be between {PER_PAGE_MIN} and {PER_PAGE_MAX}; showing {bounded}."
    return asked, ""


def form_problems(form: ListForm) -> list[str]:
    """One sentence per field that did not validate (its filter is not applied)."""
    problems = []
    for name, errors in form.errors.items():
        label = form.fields[name].label if name in form.fields else "Filters"
        outcome = "The default order is used." if name == "sort" else "This filter was not applied."
        problems.append(f"{label}: {' '.join(str(error) for error in errors)} {outcome}")
    return problems


def sort_headers(params: QueryDict, sort: str, columns: list[tuple[str | None, str, str]]) -> list[dict]:
    """Each column's header: a link that sorts by it (again: the other way), and its aria-sort state."""
    headers = []
    for key, label, first in columns:
        if key is None:
            headers.append({"label": label, "url": None, "state": ""})
            continue
        state = "ascending" if sort == key else "descending" if sort == f"-{key}" else ""
        next_sort = {"ascending": f"-{key}", "descending": key}.get(state, f"{first}{key}")
        headers.append({"label": label, "url": query_with(params, sort=next_sort, page=None), "state": state})
    return headers


def pager(params: QueryDict, page_obj) -> dict:
    """Links to the first, previous, next and last pages (None where there is none)."""
    number, last = page_obj.number, page_obj.paginator.num_pages
    link = lambda n: query_with(params, page=n)  # noqa: E731
    return {
        "first": link(1) if number > 1 else None, "previous": link(number - 1) if number > 1 else None,
        "next": link(number + 1) if number < last else None, "last": link(last) if number < last else None,
        "number": number, "pages": last, "start": page_obj.start_index(), "end": page_obj.end_index(),
        "count": page_obj.paginator.count,
    }


def _list_context(request: HttpRequest, form: ListForm) -> tuple[dict, list[str], int]:
    """The form's valid values, the problems to show, and the page size."""
    form.is_valid()
    problems = form_problems(form)
    per_page, problem = per_page_of(request.GET.get("per_page"))
    if problem:
        problems.append(problem)
    values = dict(form.cleaned_data)
    values["sort"] = values.get("sort") or form.DEFAULT_SORT
    return values, problems, per_page


def _per_page_choices(per_page: int) -> list[int]:
    return sorted({*PER_PAGE_CHOICES, per_page})


def run_export_links(values: dict) -> dict[str, str]:
    """``/api/export`` with the list's filters in the API's names (the search has no API equivalent)."""
    start, end = lists.day_range(since=values.get("since"), until=values.get("until"))
    params = QueryDict(mutable=True)
    for name in ("task", "strategy", "status", "origin", "model"):
        if values.get(name) not in (None, ""):
            params[name] = str(values[name])
    if start:
        params["created_after"] = start.isoformat()
    if end:
        params["created_before"] = (end - timedelta(microseconds=1)).isoformat()
    base = reverse("export")
    return {fmt: f"{base}?{query_with(params, format=fmt)[1:]}" for fmt in ("csv", "json")}


@login_required
@require_GET
def runs(request: HttpRequest) -> HttpResponse:
    form = RunListForm(request.GET, task_choices=lists.task_choices(), model_choices=lists.model_choices())
    values, problems, per_page = _list_context(request, form)

    def build() -> dict:
        qs = lists.runs_filtered(
            sort=values["sort"], sort_fields=form.SORTS, task=values.get("task", ""),
            model_id=values.get("model"), strategy=values.get("strategy", ""), status=values.get("status", ""),
            origin=values.get("origin", ""), since=values.get("since"), until=values.get("until"),
            search=values.get("q", ""))
        page_obj, problem = lists.page_of(qs, number=request.GET.get("page"), per_page=per_page)
        return {
            "form": form, "problems": [*problems, problem] if problem else problems, "rows": page_obj.object_list,
            "headers": sort_headers(request.GET, values["sort"], RUN_COLUMNS), "pager": pager(request.GET, page_obj),
            "sort": values["sort"], "per_page": per_page, "per_page_choices": _per_page_choices(per_page),
            "filters": {name: values.get(name) or "" for name in ("task", "strategy", "status", "origin", "model")},
            "export": run_export_links(values), "filtered": request.GET.urlencode() != "",
        }

    return page(request, "panel/runs.html", "runs", build)


@login_required
@require_GET
def models(request: HttpRequest) -> HttpResponse:
    form = ModelListForm(request.GET, task_choices=lists.task_choices())
    values, problems, per_page = _list_context(request, form)

    def build() -> dict:
        qs = lists.models_filtered(
            sort=values["sort"], sort_fields=form.SORTS, task=values.get("task", ""),
            strategy=values.get("strategy", ""), origin=values.get("origin", ""), status=values.get("status", ""),
            since=values.get("since"), until=values.get("until"), search=values.get("q", ""))
        page_obj, problem = lists.page_of(qs, number=request.GET.get("page"), per_page=per_page)
        return {
            "form": form, "problems": [*problems, problem] if problem else problems, "rows": page_obj.object_list,
            "headers": sort_headers(request.GET, values["sort"], MODEL_COLUMNS), "pager": pager(request.GET, page_obj),
            "sort": values["sort"], "per_page": per_page, "per_page_choices": _per_page_choices(per_page),
            "filtered": request.GET.urlencode() != "",
        }

    return page(request, "panel/models.html", "models", build)
