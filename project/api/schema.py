"""OpenAPI: the one error shape documented on every operation, with an example per status.

``error_responses`` runs as a drf-spectacular post-processing hook, so every operation —
this app's and every other app's — documents the errors the API can answer with, and a
new view cannot forget them. A view that documents a status itself keeps its own.
"""

from __future__ import annotations

ERROR_COMPONENT = "Error"
ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error answer has this shape.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "Stable, machine-readable: invalid, not_found, ..."},
                "message": {"type": "string", "description": "What went wrong, written for a person."},
                "details": {
                    "type": "object",
                    "additionalProperties": {},
                    "description": "Field errors (field -> list of messages) or other specifics.",
                },
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}

_EXAMPLES: dict[str, tuple[str, dict]] = {
    "400": ("Invalid input", {"error": {
        "code": "invalid", "message": "name: This field is required.",
        "details": {"name": ["This field is required."]}}}),
    "401": ("Not authenticated", {"error": {
        "code": "not_authenticated", "message": "Authentication credentials were not provided."}}),
    "403": ("Not an operator", {"error": {
        "code": "permission_denied", "message": "Only an operator (a staff user) may change this."}}),
    "404": ("Not found", {"error": {"code": "not_found", "message": "No ModelVersion matches the given query."}}),
    "409": ("Conflict", {"error": {"code": "conflict", "message": "The run has already finished."}}),
    "413": ("Upload too large", {"error": {
        "code": "payload_too_large", "message": "The upload is 31.0 MiB; the limit is 20.0 MiB."}}),
    "415": ("Unsupported media type", {"error": {
        "code": "unsupported_media_type", "message": "Unsupported media type \"text/plain\" in request."}}),
    "429": ("Throttled", {"error": {
        "code": "throttled", "message": "Request was throttled. Expected available in 12 seconds.",
        "details": {"retry_after": 12}}}),
}
_DESCRIPTIONS = {
    "400": "Invalid input: see `error.details` for field errors.",
    "401": "No valid credentials (token or session).",
    "403": "Authenticated, but not allowed (writes need an operator; session writes need a CSRF token).",
    "404": "No such object.",
    "409": "The object's state does not allow this now.",
    "413": "The upload is larger than the server accepts; refused before it was read whole.",
    "415": "The request body's media type is not accepted here.",
    "429": "Too many requests; retry after `Retry-After` seconds.",
}


def _response(status: str) -> dict:
    summary, value = _EXAMPLES[status]
    return {
        "description": _DESCRIPTIONS[status],
        "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"},
            "examples": {value["error"]["code"]: {"value": value, "summary": summary}},
        }},
    }


#: Operation extension through which a view asks for more documented errors, e.g. ["409"].
EXTRA_ERRORS = "x-extra-errors"


def _statuses(path: str, operation: dict) -> list[str]:
    statuses = ["429", *operation.pop(EXTRA_ERRORS, [])]
    security = operation.get("security") or []
    if security and {} not in security:
        statuses += ["401", "403"]
    parameters = operation.get("parameters") or []
    if "requestBody" in operation or any(p.get("in") == "query" for p in parameters):
        statuses.append("400")
    if "requestBody" in operation:
        statuses.append("415")
        if "multipart/form-data" in operation["requestBody"].get("content", {}):
            statuses.append("413")
    if "{" in path:
        statuses.append("404")
    return sorted(set(statuses))


def error_responses(result: dict, generator, request, public) -> dict:
    """drf-spectacular post-processing hook: add the error component and responses."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_COMPONENT] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in {"get", "put", "post", "patch", "delete", "head", "options"}:
                continue
            responses = operation.setdefault("responses", {})
            for status in _statuses(path, operation):
                responses.setdefault(status, _response(status))
            for status, response in responses.items():
                # A view that documents an error status with only a description gets the shape too.
                if status.startswith("4") and "content" not in response and status in _EXAMPLES:
                    response["content"] = _response(status)["content"]
    return result
