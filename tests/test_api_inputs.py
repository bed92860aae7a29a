"""No input gets a 500: bodies nested too deeply, control characters in paths; and no input forges a log line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api.control_chars import EscapingFormatter
from api_support import settings_for

NESTED = [
    "[" * 10_000 + "]" * 10_000,
    '{"name": ' + "[" * 10_000 + "]" * 10_000 + "}",
    '{"a":' * 10_000 + "1" + "}" * 10_000,
]


@pytest.fixture
def client(db_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(db_path))) as c:
        yield c


@pytest.mark.parametrize("body", NESTED)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/v1/rules"), ("POST", "/api/v1/rules/preview"), ("PUT", "/api/v1/rules/high_value_user"),
     ("POST", "/api/v1/data/config"), ("POST", "/api/v1/operations/fusion/train")],
)
def test_deeply_nested_json_is_a_client_error(client: TestClient, method: str, path: str, body: str) -> None:
    r = client.request(method, path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "nested too deeply" in r.json()["message"], r.text


@pytest.mark.parametrize(
    "path",
    ["/console/static/a%00b.js", "/console/static/%00", "/console/%00", "/api/v1/user/U1%00", "/console/static/x%0a.js",
     "/api/v1/jobs/%1b[31m", "/api/v1/explain/U%7f"],
)
def test_control_characters_in_a_path_are_a_client_error(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 400 and "control character" in r.json()["message"], r.text
    assert "\n" not in r.json()["message"] and "\x00" not in r.json()["message"]


def test_log_lines_escape_control_characters() -> None:
    fmt = EscapingFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("ups.api", logging.ERROR, __file__, 1, "unhandled error on GET %s", ("/a\nERROR forged\x00",), None)
    assert fmt.format(record) == "ERROR unhandled error on GET /a\\nERROR forged\\x00"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("ups.api", logging.ERROR, __file__, 1, "x\ny", (), sys.exc_info())
    lines = fmt.format(record).splitlines()
    assert lines[0] == "ERROR x\\ny" and lines[1].startswith("Traceback")  # the traceback keeps its lines


def test_the_apis_log_handlers_escape_control_characters(client: TestClient) -> None:
    """What the running app's log handlers write for a message carrying request data."""
    record = logging.LogRecord("ups.api", logging.WARNING, __file__, 1, "request for %s", ("/x\nCRITICAL - forged",), None)
    handlers = [h for h in logging.getLogger().handlers if not type(h).__module__.startswith("_pytest")]
    assert handlers
    for handler in handlers:
        text = handler.format(record)
        assert "request for /x\\nCRITICAL - forged" in text and "\n" not in text, text
