"""The published OpenAPI schema: valid, served with local docs, and honoured by every operation.

The schemathesis run sends generated requests — valid ones and deliberately invalid ones — to
every operation as an operator, and checks that nothing answers 5xx and that every status,
content type, header and body is the one the schema documents.
"""

from __future__ import annotations

import re

import pytest
import schemathesis
import yaml
from django.core.management import call_command
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from schemathesis import DataGenerationMethod
from schemathesis.checks import not_a_server_error
from schemathesis.exceptions import SkipTest
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from improvement.runs.lifecycle import run_create
from models_registry.task_jobs import task_job_create
from tests.factories import model_with_versions

pytestmark = pytest.mark.django_db

# Per operation: valid requests, and requests made invalid on purpose (fewer: generating them
# is mostly filtering, and each invalid part is refused the same way).
MAX_EXAMPLES = {DataGenerationMethod.positive: 10, DataGenerationMethod.negative: 5}


def test_schema_is_served_as_yaml_and_json_and_needs_a_login(anon, bob):
    assert anon.get("/api/schema/").status_code == 401
    response = bob.get("/api/schema/")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/vnd.oai.openapi")
    assert yaml.safe_load(response.content)["openapi"].startswith("3.")
    schema = bob.get("/api/schema/?format=json").json()
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]
    assert {"tokenAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])


def test_schema_validates_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))


def test_every_operation_is_documented_with_its_errors(bob):
    schema = bob.get("/api/schema/?format=json").json()
    problems = []
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            if not op.get("summary") and not op.get("description"):
                problems.append(f"{where}: no summary or description")
            success = [code for code in op["responses"] if code.startswith("2")]
            if not success:
                problems.append(f"{where}: no success response")
            for code, response in op["responses"].items():
                if code.startswith("4"):
                    media = response["content"]["application/json"]
                    if media["schema"] != {"$ref": "#/components/schemas/Error"} or not media.get("examples"):
                        problems.append(f"{where} {code}: not the error shape with an example")
            if op.get("security") and {} not in op["security"] and "401" not in op["responses"]:
                problems.append(f"{where}: 401 undocumented")
            if method in ("post", "put", "patch") and "requestBody" in op:
                has_example = any("examples" in media for media in op["requestBody"]["content"].values())
                if not has_example and path not in ("/api/loop/start",):
                    problems.append(f"{where}: request body without an example")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_docs_pages_load_everything_from_this_site(anon, bob, page):
    assert anon.get(page).status_code in (401, 403)
    response = bob.get(page)
    assert response.status_code == 200
    html = response.content.decode()
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert urls and all(url.startswith("/static/") for url in urls), urls
    assert not re.search(r"https?://", html), "the page references another site"
    for url in urls:  # the assets are really there (WhiteNoise serves them)
        asset = bob.get(url)
        assert asset.status_code == 200, url
        b"".join(asset.streaming_content) if asset.streaming else asset.content


# -------------------------------------------------------------------------------- schemathesis

# Not negative_data_rejection: DRF coerces "1" to 1 and "true" to true, and unknown query parameters
# are ignored, both on purpose; what must hold is no 5xx and answers that match the schema.
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance)


def _exercise(operation, method: DataGenerationMethod, token: str, failures: list[str], objects: dict) -> None:
    kwargs = {}
    if method == DataGenerationMethod.negative and "{" in operation.path:
        # Invalid data goes to the query and the body of a real object: a path parameter made
        # invalid is only ever a 404, and schemathesis mostly fails to generate one at all.
        kwargs["path_parameters"] = {
            name: objects[resource] for resource, name in re.findall(r"([\w-]+)/\{(\w+)\}", operation.path)
        }
    # schemathesis cannot encode a multipart body that is not an object (its negative data may be).
    strategy = operation.as_strategy(data_generation_method=method, **kwargs).filter(
        lambda case: case.media_type != "multipart/form-data" or isinstance(case.body, dict))

    @given(case=strategy)
    @hypothesis_settings(max_examples=MAX_EXAMPLES[method], deadline=None, derandomize=True, database=None,
                         phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    def exercise(case):
        response = case.call_wsgi(headers={"Authorization": f"Token {token}"})
        try:
            case.validate_response(response, checks=CHECKS)
        except AssertionError as exc:
            failures.append(f"{operation.verbose_name} [{method.name}] {response.status_code}: "
                            f"{str(exc)[:600]}\n  request: {case.as_curl_command()[:400]}\n  meta: {case.meta}")

    exercise()


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(operator, bob, wsgi_app, settings):
    # Token requests with generated passwords: hash them cheaply (the real hasher is slow on purpose).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    model, versions = model_with_versions(2)
    run = run_create(model=model, strategy="training", enqueue=False)
    job = task_job_create(name="generated", algorithm_path="tests.api.helpers.sum_of_squares",
                          sampler_spec={"shape": [2]})
    objects = {"tasks": model.task.slug, "models": model.pk, "versions": versions[0].pk, "runs": run.pk,
               "task-jobs": job.pk}
    token = Token.objects.create(user=operator).key
    raw = bob.get("/api/schema/?format=json").json()
    schema = schemathesis.from_dict(raw, app=wsgi_app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30

    for operation in operations:
        for method in (DataGenerationMethod.positive, DataGenerationMethod.negative):
            try:
                _exercise(operation, method, token, failures, objects)
            except SkipTest:
                continue  # nothing to make invalid: no query and no body
            except Exception as exc:  # noqa: BLE001 - hypothesis errors (unsatisfiable strategies)
                failures.append(f"{operation.verbose_name} [{method.name}]: {type(exc).__name__}: {exc}"[:600])
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:40])
