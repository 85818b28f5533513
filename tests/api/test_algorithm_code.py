"""Algorithm paths name code the server runs: only superusers choose them, only from allowed modules.

The attack this guards against: a staff user registered a task whose algorithm was
``pickle:loads`` (or ``os.system``), and a viewer's predict request then ran what it sent.
"""

from __future__ import annotations

import sys

import pytest

from models_registry.models import Task
from models_registry.serving.choices import SwitchReason
from models_registry.serving.router import serving_router
from models_registry.serving.switching import ALGORITHMIC, serving_switch
from tests.api.test_uploads import _upload, assert_nothing_left_behind
from tests.factories import blobs_csv
from tests.jobs import job_wait

pytestmark = pytest.mark.django_db

SAMPLER = {"shape": [3], "distribution": "uniform", "low": -1, "high": 1, "n_samples": 200}


def test_staff_cannot_name_an_algorithm(alice):
    generator = alice.post("/api/tasks", {"name": "Squares", "algorithm_path": "tests.api.helpers.sum_of_squares",
                                          "sampler_spec": SAMPLER}, format="json")
    assert generator.status_code == 403
    assert "only superusers may name an algorithm" in generator.json()["error"]["message"]
    upload = _upload(alice, blobs_csv(n=80), algorithm_path="models_registry.algorithms.KNNClassifier")
    assert upload.status_code == 403
    assert_nothing_left_behind()
    plain = _upload(alice, blobs_csv(n=80))  # no path: the classical default, chosen by the system
    assert plain.status_code == 201 and plain.json()["algorithm_path"].startswith("models_registry.algorithms.")


@pytest.mark.parametrize("path", ["pickle:loads", "os.system", "builtins.eval", "subprocess.check_output",
                                  "models_registry.algorithms.runtime_checkable"])
def test_even_a_superuser_cannot_name_code_outside_the_allowed_modules(root, path):
    response = root.post("/api/tasks", {"name": "Evil", "algorithm_path": path, "sampler_spec": SAMPLER},
                         format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_implementation"
    assert "not one this deployment allows algorithms from" in error["message"]
    assert_nothing_left_behind()


def test_a_superuser_names_an_allowed_algorithm(root, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = root.post("/api/tasks", {"name": "Squares",
                                            "algorithm_path": "user_algorithms.examples.sum_of_squares",
                                            "sampler_spec": SAMPLER}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["algorithm_path"] == "user_algorithms.examples.sum_of_squares"
    job = job_wait(root, response["Location"])
    assert job["status"] == "done", job
    assert Task.objects.get(slug=job["task"]).algorithm_path == "user_algorithms.examples.sum_of_squares"


def test_a_stored_path_outside_the_list_is_never_imported_by_serving(alice, bob, tmp_path, monkeypatch):
    """A task row that names foreign code (an old row, a database edit): a viewer's predict
    request must neither import that module nor call it."""
    imported, called = tmp_path / "imported", tmp_path / "called"
    (tmp_path / "plasticity_evil_mod.py").write_text(
        f"open({str(imported)!r}, 'w').close()\n"
        f"def run(X):\n    open({str(called)!r}, 'w').close()\n    return X[:, :1]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "plasticity_evil_mod", raising=False)
    created = _upload(alice, blobs_csv(n=80))
    assert created.status_code == 201
    task = Task.objects.get(slug=created.json()["slug"])
    Task.objects.filter(pk=task.pk).update(algorithm_path="plasticity_evil_mod.run")
    task.refresh_from_db()
    serving_switch(task=task, implementation=ALGORITHMIC, reason=SwitchReason.OPERATOR)
    serving_router().invalidate()
    answer = bob.post(f"/api/tasks/{task.slug}/predict", {"inputs": [[0.0, 0.0]]}, format="json")
    assert answer.status_code >= 400 and "error" in answer.json()
    assert not imported.exists() and not called.exists()
    assert "plasticity_evil_mod" not in sys.modules


def test_the_admin_shows_the_path_read_only_to_staff(alice, operator, admin_client, client):
    from django.contrib.auth.models import Permission

    operator.user_permissions.add(*Permission.objects.filter(codename__in=["change_task", "view_task"]))
    task = Task.objects.get(slug=_upload(alice, blobs_csv(n=80)).json()["slug"])
    client.force_login(operator)
    page = client.get(f"/admin/models_registry/task/{task.pk}/change/")
    assert page.status_code == 200
    assert b'name="algorithm_path"' not in page.content  # shown, not editable
    su_page = admin_client.get(f"/admin/models_registry/task/{task.pk}/change/")
    assert b'name="algorithm_path"' in su_page.content
    form = su_page.context["adminform"].form
    data = {name: form.initial.get(name) or "" for name in form.fields}
    refused = admin_client.post(f"/admin/models_registry/task/{task.pk}/change/",
                                {**data, "algorithm_path": "os.system"})
    assert refused.status_code == 200 and b"not one this deployment allows" in refused.content
    task.refresh_from_db()
    assert task.algorithm_path.startswith("models_registry.algorithms.")
