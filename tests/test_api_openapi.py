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


def test_the_score_response_lists_its_fields() -> None:
    doc = _schema()
    op = doc["paths"]["/api/v1/user/{user_id}"]["get"]
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    components = doc["components"]["schemas"]
    user = components[ref]
    assert {"user_id", "profile", "score"} <= set(user["properties"])
    score = components[user["properties"]["score"]["$ref"].rsplit("/", 1)[-1]]
    assert {"score", "gate", "f_rule", "f_nn", "rules", "model_version"} <= set(score["properties"])
