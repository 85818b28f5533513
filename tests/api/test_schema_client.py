"""A client written only from the published OpenAPI schema drives an improvement end to end.

``SchemaClient`` knows three things beforehand, as any client must: the base URL, where the
token is obtained and where the schema is. Everything else — which path and method an
operation has, how its parameters go into the path, how its body is encoded (JSON or
multipart with a file), how credentials are sent — it reads from the schema. It imports
nothing from the project. The test stands in for the worker by calling the engine between
polls (in production a django-q2 worker picks the run up).
"""

from __future__ import annotations

import io
import re
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

pytestmark = pytest.mark.django_db


class SchemaClient:
    TOKEN_PATH = "/api/auth/token"
    SCHEMA_PATH = "/api/schema/"

    def __init__(self, http: httpx.Client, *, username: str, password: str) -> None:
        self.http = http
        response = http.post(self.TOKEN_PATH, json={"username": username, "password": password})
        response.raise_for_status()
        self.token = response.json()["token"]
        self.schema = self.http.get(self.SCHEMA_PATH, params={"format": "json"},
                                    headers={"Authorization": f"Token {self.token}"}).json()
        self.operations = {
            op["operationId"]: (method.upper(), path, op)
            for path, ops in self.schema["paths"].items() for method, op in ops.items()
        }
        assert self.operations["auth_token_create"][1] == self.TOKEN_PATH

    def _auth_headers(self, op: dict) -> dict:
        schemes = self.schema["components"]["securitySchemes"]
        for requirement in op.get("security", []):
            for name in requirement:
                scheme = schemes[name]
                if scheme["type"] == "apiKey" and scheme["in"] == "header":
                    return {scheme["name"]: f"Token {self.token}"}
        return {}

    def call(self, operation_id: str, *, path: dict | None = None, query: dict | None = None,
             body: dict | None = None, files: dict | None = None) -> httpx.Response:
        method, template, op = self.operations[operation_id]
        names = re.findall(r"\{(\w+)\}", template)
        url = template.format(**{name: (path or {})[name] for name in names})
        kwargs: dict[str, Any] = {"params": query, "headers": self._auth_headers(op)}
        content = op.get("requestBody", {}).get("content", {})
        if files:
            assert "multipart/form-data" in content, f"{operation_id} takes no upload"
            kwargs.update(data=body or {}, files=files)
        elif body is not None or content:
            assert not content or "application/json" in content, f"{operation_id} takes no JSON"
            kwargs["json"] = body or {}
        return self.http.request(method, url, **kwargs)

    def ok(self, operation_id: str, **kwargs) -> httpx.Response:
        response = self.call(operation_id, **kwargs)
        documented = self.operations[operation_id][2]["responses"]
        assert str(response.status_code) in documented, (operation_id, response.status_code)
        assert response.is_success, (operation_id, response.status_code, response.text[:500])
        return response


def _csv(n: int = 300, seed: int = 3) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(3, 4))
    y = np.arange(n) % 3
    X = centers[y] + rng.normal(0, 1.0, size=(n, 4))
    lines = ["f0,f1,f2,f3,kind"] + [",".join(f"{v:.5f}" for v in row) + f",k{label}" for row, label in zip(X, y, strict=True)]
    return ("\n".join(lines) + "\n").encode(), X.astype(np.float32), y


@pytest.mark.slow
def test_a_schema_only_client_improves_a_model_and_runs_it_as_onnx(operator, wsgi_app):
    from improvement.runs.execution import run_execute  # the worker's part, not the client's

    http = httpx.Client(transport=httpx.WSGITransport(app=wsgi_app), base_url="http://testserver")
    client = SchemaClient(http, username="alice", password="alice-pass-123")

    content, X, y = _csv()
    task = client.ok("tasks_create", body={"name": "Blob kinds", "target_column": "kind"},
                     files={"file": ("kinds.csv", io.BytesIO(content), "text/csv")}).json()
    assert task["output_kind"] == "classes" and task["class_labels"] == ["k0", "k1", "k2"]

    client.ok("config_partial_update", body={"performance_threshold": 0.05, "run_time_budget_s": 8})
    genome = {"kind": "mlp", "input_shape": task["input_shape"], "output_dim": task["n_outputs"],
              "hidden": [2], "activation": "tanh"}  # deliberately weak, so training has room
    model = client.ok("models_create", body={"task": task["slug"], "name": "weak", "genome": genome}).json()
    first = model["active_version"]

    run = client.ok("runs_create", body={"model": model["id"], "strategy": "training",
                                         "params": {"time_budget_s": 8, "epochs": 60}}).json()
    for _ in range(20):
        run = client.ok("runs_retrieve", path={"id": run["id"]}).json()
        if run["status"] in ("promoted", "rejected", "failed", "cancelled"):
            break
        if run["status"] == "queued":
            run_execute(run_id=run["id"])
    assert run["status"] == "promoted", run["decision"] or run["error"]

    model = client.ok("models_retrieve", path={"id": model["id"]}).json()
    version = model["active_version"]
    assert version["id"] == run["result_version"] != first["id"] and version["gate_score"] > first["gate_score"] and version["test_score"] is not None
    history = client.ok("history_list", query={"model": model["id"], "limit": 5}).json()
    assert history["results"][0]["id"] == run["id"]

    response = client.ok("versions_onnx", path={"id": version["id"]})
    assert response.headers["content-disposition"].endswith('.onnx"')
    session = ort.InferenceSession(response.content, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: X})
    assert logits.shape == (len(X), 3)
    accuracy = float((logits.argmax(axis=1) == y).mean())
    assert accuracy > 0.8, accuracy
