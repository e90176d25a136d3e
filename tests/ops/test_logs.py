"""STEWARD_LOG_FORMAT=json: one JSON object a line, with request id, run id and step id."""

import json
import logging

import pytest

from audit import context, logs
from audit.actors import SYSTEM
from orchestrator import engine, services


class Collect(logging.Handler):
    """Keep the formatted lines of the records it handles."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record):
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def collected():
    """Collect every log line of the block, formatted as JSON."""
    handler = Collect()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(previous)


def test_a_line_carries_the_request_id_and_extras(collected):
    with context.acting_as(None, request_id="req-123"):
        logging.getLogger("steward.test").warning("hello %s", "world", extra={"tool": "x"})
    logging.getLogger("steward.test").info("outside")
    inside, outside = collected
    assert inside["message"] == "hello world" and inside["level"] == "WARNING"
    assert inside["request_id"] == "req-123" and inside["tool"] == "x"
    assert inside["logger"] == "steward.test" and inside["time"].endswith("+00:00")
    assert "request_id" not in outside


def test_an_exception_is_kept_in_the_line(collected):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("steward.test").exception("failed")
    assert "ValueError: boom" in collected[0]["exception"]


@pytest.mark.django_db
def test_a_steps_lines_name_its_run_and_step(collected, make_workflow):
    wf = make_workflow(
        {
            "steps": [
                {
                    "id": "bad",
                    "type": "tool",
                    "tool": "test.flaky",
                    "args": {"fail_times": 9, "error": "FatalToolError"},
                    "on_failure": "continue",
                }
            ]
        }
    )
    with context.acting_as(None, request_id="req-run"):
        run = services.start_run(wf, started_by=SYSTEM)
        engine.drain()
    failed = [
        line for line in collected if "attempt" in line["message"] and "failed" in line["message"]
    ]
    assert failed, collected
    assert failed[0]["run_id"] == run.pk and failed[0]["step_id"] == "bad"
    assert failed[0]["request_id"] == "req-run"
    after = logs.current_fields()
    assert after == {}  # the step's fields end with its attempt


def test_the_setting_selects_the_json_formatter(monkeypatch):
    import importlib

    from orchestrator import settings as steward_settings

    monkeypatch.setenv("STEWARD_LOG_FORMAT", "json")
    try:
        reloaded = importlib.reload(steward_settings)
        assert reloaded.LOGGING["handlers"]["console"]["formatter"] == "json"
        assert reloaded.LOGGING["formatters"]["json"]["()"] == "audit.logs.JsonFormatter"
    finally:
        monkeypatch.delenv("STEWARD_LOG_FORMAT")
        importlib.reload(steward_settings)
