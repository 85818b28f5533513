"""A new task from the browser (``/tasks/new/``) without script: upload, preview, choose, create.

Actors: alice (operator), carol (another operator), bob (viewer), an anonymous visitor. The task is
created by the REST upload's service; every refusal is shown next to the field it concerns, with
the parser's own message, and creates nothing.
"""

from __future__ import annotations

import html
import io
import re

import numpy as np
import pytest
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django_q.models import OrmQ

from improvement.services import ALGORITHM_TASK, BOOTSTRAP_TASK
from models_registry.choices import DataSource
from models_registry.data.splits import MIN_ROWS
from models_registry.models import NeuralModel, Task
from project.panel import staged_uploads
from project.panel.staged_uploads import STAGED_FOLDER, StagedUploadMissing, staged_upload_get
from project.panel.views_task_new import UPLOAD_GONE
from tests.factories import csv_task

pytestmark = pytest.mark.django_db

NEW = "/tasks/new/"
CREATE = "/tasks/new/create"


@pytest.fixture(autouse=True)
def _fresh_allowances():
    cache.clear()  # the upload allowance is kept in the cache, per user id; ids repeat across tests
    yield
    cache.clear()


@pytest.fixture
def carol_client(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_user("carol", password="carol-pass-123", is_staff=True))
    return client


def table_csv(n: int = 120, *, seed: int = 0) -> bytes:
    """x1, x2, grade (0/1/2: detected as classes), x3 (a number that depends on the rest)."""
    rng = np.random.default_rng(seed)
    grade = np.arange(n) % 3
    x1 = grade * 2.0 + rng.normal(0, 0.5, n)
    x2 = rng.normal(0, 1, n)
    x3 = 0.5 * x1 - x2 + rng.normal(0, 0.1, n)
    lines = ["x1,x2,grade,x3"] + [f"{a:.4f},{b:.4f},{g},{c:.4f}" for a, b, g, c in zip(x1, x2, grade, x3, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def arrays_npz(n: int = 120) -> bytes:
    rng = np.random.default_rng(1)
    labels = np.arange(n) % 3
    features = (labels[:, None] * 3.0 + rng.normal(0, 1, (n, 4))).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, features=features, labels=labels, noise=rng.normal(size=n))
    return buffer.getvalue()


#: Row 7 (the header is row 1), column 2 holds a word.
RED_CELL = b"x1,x2,grade\n" + b"".join(b"%d,%s,%d\n" % (i, b"red" if i == 5 else b"%d" % (i * 2), i % 2)
                                       for i in range(80))
#: 80 distinct whole numbers: classes of one row each when asked for classes.
MANY_CODES = b"x1,code\n" + b"".join(b"%d.5,%d\n" % (i, i) for i in range(80))
TEXT_TARGET = b"x1,species\n" + b"".join(b"%d,%s\n" % (i, b"ab"[i % 2:i % 2 + 1]) for i in range(80))


def _upload(client: Client, content: bytes, filename: str = "measurements.csv"):
    return client.post(NEW, {"file": SimpleUploadedFile(filename, content)})


def _token(response) -> str:
    assert response.status_code == 302, response.content.decode()[:2000]
    match = re.fullmatch(r"/tasks/new/\?upload=([A-Za-z0-9_-]{32})", response["Location"])
    assert match, response["Location"]
    return match.group(1)


def _field(page: str, name: str) -> str:
    """The text of the form field block ``data-field="name"`` (up to the next field), unescaped."""
    start = page.index(f'data-field="{name}"')
    end = min([i for i in (page.find('data-field="', start + 12), page.find("</fieldset>", start),
                           page.find("</form>", start)) if i != -1])
    return html.unescape(page[start:end])


def _error_in_place(response, field: str, *fragments: str) -> str:
    page = response.content.decode()
    block = _field(page, field)
    assert 'role="alert"' in block, f"no error next to {field}: {block[:600]}"
    for fragment in fragments:
        assert fragment in block, f"{fragment!r} not next to {field}: {block[:800]}"
    return block


def _staged_count() -> int:
    folders, _ = staged_uploads._listdir(STAGED_FOLDER)
    return sum(len([f for f in staged_uploads._listdir(f"{STAGED_FOLDER}/{d}")[1] if f.endswith(".json")])
               for d in folders)


def _choices(token: str, **fields: str) -> dict:
    return {"token": token, "name": "Measurements", "slug": "", "description": "", "output_kind": "", "metric": "",
            **fields}


# ----------------------------------------------------------------------------------- success


@pytest.mark.parametrize(
    ("target", "kind", "metric", "expected_kind", "features"),
    [("grade", "", "macro_f1", "classes", ["x1", "x2", "x3"]),
     ("x3", "values", "mae_skill", "values", ["x1", "x2", "grade"])],
    ids=["classes-detected", "values-chosen"],
)
def test_a_csv_becomes_a_task_with_the_chosen_target_kind_and_metric(
        operator, operator_client, django_capture_on_commit_callbacks, target, kind, metric, expected_kind, features):
    form = operator_client.get(reverse("panel:task-new"))
    assert form.status_code == 200 and 'type="file" name="file"' in form.content.decode()
    token = _token(_upload(operator_client, table_csv()))

    preview = operator_client.get(f"{NEW}?upload={token}")
    assert preview.status_code == 200
    page = preview.content.decode()
    rows = re.findall(r'<tr data-preview-row="(\d+)">(.*?)</tr>', page, re.S)
    assert [int(i) for i, _ in rows] == list(range(10))  # the first 10 rows
    first_line = table_csv().decode().splitlines()[1].split(",")
    assert re.findall(r"<td>(.*?)</td>", rows[0][1]) == first_line
    assert '<td data-column-type="grade">integer · 3 distinct · as target: classes</td>' in page
    assert '<td data-column-type="x3">number · 120 distinct · as target: values</td>' in page
    assert "120 rows · 4 columns" in page
    assert re.search(r'<option value="x3"[^>]*selected>', page), "the last column is the default target"

    with django_capture_on_commit_callbacks(execute=True):
        created = operator_client.post(CREATE, _choices(token, target_column=target, output_kind=kind, metric=metric))
    assert created.status_code == 302, _field(created.content.decode(), "target_column")[:800]
    task = Task.objects.get()
    assert created["Location"] == reverse("panel:task", args=[task.slug]) and task.slug == "measurements"
    assert (task.target_name, task.output_kind, task.metric, task.feature_names) == (target, expected_kind, metric,
                                                                                       features)
    assert task.source == DataSource.UPLOAD
    assert task.n_train + task.n_val + task.n_gate + task.n_test == task.n_samples == 120
    assert min(task.n_train, task.n_val, task.n_gate, task.n_test) > 0
    assert task.dataset_versions.get().created_by == operator
    # As after an API upload: the first model exists, its training and the algorithm's evaluation are queued.
    model = NeuralModel.objects.get(task=task)
    assert model.name == "auto" and not model.versions.exists()
    queued = {(row.func(), tuple(row.task["args"])[:1]) for row in OrmQ.objects.all()}
    assert (BOOTSTRAP_TASK, (model.pk,)) in queued and (ALGORITHM_TASK, (task.pk,)) in queued
    with pytest.raises(StagedUploadMissing):  # the kept file is gone once used
        staged_upload_get(user=operator, token=token)
    assert "Task measurements created" in operator_client.get(created["Location"]).content.decode()


def test_an_npz_becomes_a_task_from_the_chosen_arrays(operator_client, django_capture_on_commit_callbacks):
    token = _token(_upload(operator_client, arrays_npz(), "arrays.npz"))
    page = operator_client.get(f"{NEW}?upload={token}").content.decode()
    assert "120 rows · 3 arrays" in page
    assert '<td data-column-type="features">number · shape 120×4 · as target: values</td>' in page
    assert '<td data-column-type="labels">integer · shape 120 · 3 distinct · as target: classes</td>' in page
    with np.load(io.BytesIO(arrays_npz())) as arrays:
        first = arrays["features"][0]
        assert f"<td>[{', '.join(f'{v:.6g}' for v in first)}]</td><td>{arrays['labels'][0]}</td>" in page
    assert len(re.findall(r'<tr data-preview-row="\d+">', page)) == 10
    assert 'name="inputs_key"' in page and 'name="targets_key"' in page and 'name="target_column"' not in page

    with django_capture_on_commit_callbacks(execute=True):
        created = operator_client.post(CREATE, _choices(token, name="Arrays", inputs_key="features",
                                                        targets_key="labels", output_kind="classes",
                                                        metric="balanced_accuracy"))
    assert created.status_code == 302, _field(created.content.decode(), "targets_key")[:800]
    task = Task.objects.get(slug="arrays")
    assert (task.input_shape, task.n_outputs, task.output_kind, task.metric, task.target_name) == (
        [4], 3, "classes", "balanced_accuracy", "labels")
    assert task.n_train + task.n_val + task.n_gate + task.n_test == 120
    assert NeuralModel.objects.filter(task=task, name="auto").exists()


# ------------------------------------------------------------------------- refused: the file


@pytest.mark.parametrize(
    ("content", "filename", "fragments"),
    [(b"a;b;c\n" + b"1;2;3\n" * 30, "semi.csv", ["holding semicolons", "separated by commas"]),
     (b"a,b,c\n" + b"1,2,3\n" * 5, "short.csv", ["only 5 data rows", f"at least {MIN_ROWS}"]),
     (b"a,b,c\n1,2,3\n1,2,3\n4,5\n" + b"1,2,3\n" * 30, "ragged.csv", ["row 4 has 2 fields, expected 3"]),
     (b"not an archive", "broken.npz", ["not a valid .npz archive"]),
     (b"a,b\n1,2\n", "table.txt", ["Expected a .csv or .npz file"])],
    ids=["delimiter", "too-few-rows", "ragged", "not-npz", "extension"],
)
def test_a_file_that_cannot_make_a_task_is_refused_next_to_the_file_input(operator_client, content, filename,
                                                                          fragments):
    response = _upload(operator_client, content, filename)
    assert response.status_code == 400
    _error_in_place(response, "file", *fragments)
    assert _staged_count() == 0 and not Task.objects.exists()


def test_a_file_above_the_limit_is_refused_in_the_form_whether_or_not_its_size_was_declared(operator_client,
                                                                                           settings):
    settings.PLASTICITY_UPLOAD_MAX_BYTES = 2048
    streamed = _upload(operator_client, table_csv(200))  # ~6 KiB: within the body allowance, stopped while read
    assert streamed.status_code == 413
    _error_in_place(streamed, "file", "The file is larger than allowed; the limit is 2 KiB")
    declared = _upload(operator_client, table_csv(4000))  # ~130 KiB: the declared body is over the allowance
    assert declared.status_code == 413
    block = _error_in_place(declared, "file", "the limit is 2 KiB")
    assert re.search(r"The file is \d+ KiB; the limit is 2 KiB", block), block
    assert _staged_count() == 0 and not Task.objects.exists()
    assert _token(_upload(operator_client, table_csv(40)))  # a file within the limit is taken as usual


def test_the_upload_allowance_is_spent_once_per_accepted_file_and_not_by_refusals(operator_client, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {
        **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "upload": "2/hour"}}
    assert _token(_upload(operator_client, table_csv()))
    assert _upload(operator_client, b"a;b\n1;2\n", "semi.csv").status_code == 400  # refused: given back
    assert _token(_upload(operator_client, table_csv(seed=1)))
    throttled = _upload(operator_client, table_csv(seed=2))
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    _error_in_place(throttled, "file", "Too many uploads: the allowance is 2/hour")
    assert _staged_count() == 2


# ---------------------------------------------------------------------- refused: the choices


@pytest.mark.parametrize(
    ("content", "choices", "field", "fragments"),
    [(RED_CELL, {"target_column": "grade"}, "target_column",
      ["row 7, column 2 ('x2'): the value is 'red', not a number", "input columns must hold numbers"]),
     (MANY_CODES, {"target_column": "code", "output_kind": "classes"}, "target_column",
      ["every class needs at least 4 rows"]),
     (TEXT_TARGET, {"target_column": "species", "output_kind": "values"}, "output_kind",
      ["target 'a' is not a number, but a regression ('values') target must be numeric"]),
     (table_csv(), {"target_column": "grade", "metric": "r2"}, "metric",
      ["metric: expected one of accuracy, balanced_accuracy, macro_f1 for a classes task, got 'r2'"]),
     (table_csv(), {"target_column": "grade", "name": "New"}, "slug", ["'new' is the address of this form"]),
     (table_csv(), {"target_column": "nonexistent"}, "target_column", ["Select a valid choice"])],
    ids=["non-numeric-cell", "too-many-classes", "text-target-as-values", "metric-for-another-kind",
         "reserved-slug", "unknown-column"],
)
def test_a_choice_the_data_cannot_take_is_refused_next_to_its_field_and_nothing_is_created(
        operator, operator_client, content, choices, field, fragments):
    token = _token(_upload(operator_client, content))
    response = operator_client.post(CREATE, _choices(token, **choices))
    assert response.status_code == 400
    _error_in_place(response, field, *fragments)
    page = response.content.decode()
    assert "data-preview-row=" in page, "the preview stays on the page beside the error"
    assert not Task.objects.exists() and not NeuralModel.objects.exists()
    assert staged_upload_get(user=operator, token=token).token == token  # kept: the choice can be corrected


def test_a_taken_slug_is_refused_next_to_the_slug(operator_client):
    csv_task("taken")
    token = _token(_upload(operator_client, table_csv()))
    response = operator_client.post(CREATE, _choices(token, target_column="grade", slug="taken"))
    assert response.status_code == 400
    _error_in_place(response, "slug", "slug: a task named 'taken' already exists")
    assert list(Task.objects.values_list("slug", flat=True)) == ["taken"]


def test_an_npz_whose_arrays_do_not_match_is_refused_next_to_the_targets(operator_client):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, X=rng.normal(size=(60, 3)), y=np.arange(60) % 2, short=np.arange(30))
    token = _token(_upload(operator_client, buffer.getvalue(), "mixed.npz"))
    response = operator_client.post(CREATE, _choices(token, inputs_key="X", targets_key="short"))
    assert response.status_code == 400
    _error_in_place(response, "targets_key", "'short' must have one entry per row of 'X' (60)")
    same = operator_client.post(CREATE, _choices(token, inputs_key="X", targets_key="X"))
    _error_in_place(same, "targets_key", "Choose another array than the inputs")
    assert not Task.objects.exists()


# ------------------------------------------------------------------------------------ access


def test_another_users_token_finds_nothing(operator, operator_client, carol_client):
    token = _token(_upload(operator_client, table_csv()))
    assert carol_client.get(f"{NEW}?upload={token}").status_code == 404
    refused = carol_client.post(CREATE, _choices(token, target_column="grade"))
    assert refused.status_code == 400
    _error_in_place(refused, "file", UPLOAD_GONE)
    assert not Task.objects.exists()
    assert staged_upload_get(user=operator, token=token).filename == "measurements.csv"  # alice's is untouched


def test_an_unknown_or_expired_token_asks_for_the_file_again(operator, operator_client, monkeypatch):
    unknown = operator_client.get(f"{NEW}?upload=" + "A" * 32)
    assert unknown.status_code == 404
    _error_in_place(unknown, "file", UPLOAD_GONE)
    assert operator_client.get(f"{NEW}?upload=../../etc").status_code == 404
    token = _token(_upload(operator_client, table_csv()))
    monkeypatch.setattr(staged_uploads, "STAGED_UPLOAD_TTL_S", -1)  # every kept file is past its time
    expired = operator_client.post(CREATE, _choices(token, target_column="grade"))
    assert expired.status_code == 400
    _error_in_place(expired, "file", UPLOAD_GONE)
    assert not Task.objects.exists() and _staged_count() == 0  # the expired file was removed


def test_a_users_oldest_uploads_make_room_and_expired_ones_are_swept(operator, operator_client, carol_client,
                                                                     monkeypatch):
    tokens = [_token(_upload(operator_client, table_csv(seed=i))) for i in range(staged_uploads.STAGED_UPLOADS_PER_USER + 1)]
    with pytest.raises(StagedUploadMissing):
        staged_upload_get(user=operator, token=tokens[0])
    assert all(staged_upload_get(user=operator, token=t) for t in tokens[1:])
    monkeypatch.setattr(staged_uploads, "STAGED_UPLOAD_TTL_S", -1)
    _token(_upload(carol_client, table_csv()))  # another user's upload sweeps what expired
    assert not any(name for name in default_storage.listdir(f"{STAGED_FOLDER}/u{operator.pk}")[1])


def test_a_viewer_is_refused_and_nothing_is_kept(viewer_client):
    assert viewer_client.get(NEW).status_code == 403
    assert _upload(viewer_client, table_csv()).status_code == 403
    assert viewer_client.post(CREATE, _choices("A" * 32, target_column="grade")).status_code == 403
    assert _staged_count() == 0 and not Task.objects.exists()
    assert 'data-link="task-new"' not in viewer_client.get(reverse("panel:tasks")).content.decode()


def test_an_anonymous_visitor_is_sent_to_the_login(client):
    for response in (client.get(NEW), _upload(client, table_csv()), client.post(CREATE, {"token": "x"})):
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=/tasks/new/")
    assert _staged_count() == 0 and not Task.objects.exists()


def test_the_tasks_list_and_the_overview_link_to_the_form_for_operators(operator_client):
    for url in (reverse("panel:tasks"), reverse("overview")):
        page = operator_client.get(url).content.decode()
        assert f'href="{reverse("panel:task-new")}" data-link="task-new"' in page
