"""The OpenAPI schema describes every answer: each JSON success response names its fields."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from api.app import create_app
from api_support import settings_for


def _schema() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return create_app(settings_for(Path(tmp) / "schema.db")).openapi_schema.to_schema()


def _described(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    """An object with named properties, an array of described items, a scalar, or a choice of these."""
    if "$ref" in schema:
        return _described(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    if "oneOf" in schema or "anyOf" in schema:
        return all(_described(s, components) for s in schema.get("oneOf", schema.get("anyOf")))
    kind = schema.get("type")
    if kind == "object":
        return bool(schema.get("properties"))
    if kind == "array":
        return _described(schema.get("items", {}), components)
    return kind in ("string", "integer", "number", "boolean", "null")


def test_every_json_success_response_has_a_schema_with_its_fields() -> None:
    doc = _schema()
    components = doc.get("components", {}).get("schemas", {})
    seen, vague = 0, []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for code, response in op["responses"].items():
                for media, body in response.get("content", {}).items():
                    if not code.startswith("2") or media != "application/json":
                        continue
                    seen += 1
                    if not _described(body.get("schema", {}), components):
                        vague.append(f"{method.upper()} {path} {code}")
    assert seen >= 25  # the API's JSON endpoints, not an empty document
    assert vague == []


def test_every_operation_documents_its_success_body() -> None:
    """Each operation names at least one success answer, and each success body it names (JSON, the
    stream's events, the Prometheus text) has a schema a client can read; an operation without a body
    says so by a 204."""
    doc = _schema()
    components = doc.get("components", {}).get("schemas", {})
    missing = []
    operations = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            operations += 1
            success = {code: r for code, r in op["responses"].items() if code.startswith("2")}
            if not success:
                missing.append(f"{method.upper()} {path}: no success response")
            for code, response in success.items():
                content = response.get("content", {})
                if not content and code != "204":
                    missing.append(f"{method.upper()} {path} {code}: no body documented")
                for media, body in content.items():
                    if not _described(body.get("schema", {}), components):
                        missing.append(f"{method.upper()} {path} {code} {media}")
    assert operations >= 30
    assert missing == []


def test_the_stream_documents_its_events() -> None:
    doc = _schema()
    body = doc["paths"]["/api/v1/operations/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    event = doc["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert set(event["properties"]) == {"event", "id", "data"}
    assert set(event["properties"]["event"]["enum"]) == {"status", "job", "op", "metrics"}
    data = event["properties"]["data"]
    assert data["type"] == "string" and data["contentMediaType"] == "application/json"
    assert len(data["contentSchema"]["oneOf"]) == 4


def test_the_score_response_lists_its_fields() -> None:
    doc = _schema()
    op = doc["paths"]["/api/v1/user/{user_id}"]["get"]
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    components = doc["components"]["schemas"]
    user = components[ref]
    assert {"user_id", "profile", "score"} <= set(user["properties"])
    score = components[user["properties"]["score"]["$ref"].rsplit("/", 1)[-1]]
    assert {"score", "gate", "f_rule", "f_nn", "rules", "model_version"} <= set(score["properties"])


def test_a_job_documents_the_result_of_each_kind() -> None:
    doc = _schema()
    components = doc["components"]["schemas"]
    job = components["JobOut"]["properties"]["result"]
    kinds = {ref["$ref"].rsplit("/", 1)[-1] for ref in job["oneOf"] if "$ref" in ref}
    assert kinds == {"GraphRefreshed", "HgtJob", "FusionJob", "Regenerated"}
    hgt = components[components["HgtJob"]["properties"]["hgt"]["$ref"].rsplit("/", 1)[-1]]
    assert {"loss_history", "val_auc", "test_auc", "version"} <= set(hgt["properties"])
    assert {"embeddings", "node_counts", "duration_s"} <= set(components["GraphRefreshed"]["properties"])
