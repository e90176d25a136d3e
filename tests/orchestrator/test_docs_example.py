"""The complete example in docs/workflows.md validates, and runs as the text says it does."""

import re
from pathlib import Path

import pytest
import yaml

from audit import clock
from audit.actors import SYSTEM
from orchestrator import engine, services
from orchestrator.definitions import compile_definition, load_definition, validate_definition
from orchestrator.models import StepRun

DOC = Path(__file__).resolve().parents[2] / "docs" / "workflows.md"
MARKER = "<!-- complete example -->"


def yaml_block_after(marker: str) -> str:
    """Return the first ```yaml block that follows the marker in docs/workflows.md."""
    text = DOC.read_text()
    assert marker in text, f"{DOC} lost its {marker!r} marker"
    found = re.search(r"```yaml\n(.*?)\n```", text[text.index(marker) :], re.DOTALL)
    assert found, f"no ```yaml block after {marker!r}"
    return found.group(1)


def test_the_complete_example_validates():
    definition = load_definition(yaml_block_after(MARKER))
    assert [str(p) for p in validate_definition(definition)] == []
    compiled = compile_definition(definition)
    assert compiled.roots == ("lookup",)
    used_types = {step.type for step in compiled.steps.values()}
    assert used_types == {"tool", "sleep", "wait", "set"}


def test_every_yaml_block_in_the_doc_parses():
    for block in re.findall(r"```yaml\n(.*?)\n```", DOC.read_text(), re.DOTALL):
        assert isinstance(yaml.safe_load(block), dict)


@pytest.mark.django_db
def test_the_complete_example_runs_as_described():
    workflow = services.create_workflow(
        slug="docs-example",
        name="Docs example",
        definition=yaml_block_after(MARKER),
        actor=SYSTEM,
    )
    run_input = {"incident": "INC-7", "service": "checkout", "settle": "10s"}
    with clock.frozen(seed=1) as frozen:
        run = services.start_run(workflow, run_input, started_by=SYSTEM)
        engine.drain()
        restart = StepRun.objects.get(run=run, step_id="restart")
        assert (restart.status, restart.attempt) == ("ready", 1)  # first attempt failed
        assert (restart.ready_at - frozen.current).total_seconds() <= 2  # full jitter, ≤ 2 s
        frozen.advance(2.01)
        engine.sweep()
        engine.drain()
        assert StepRun.objects.get(run=run, step_id="settle").status == "waiting"
        frozen.advance(10)
        engine.sweep()
        engine.drain()
        assert StepRun.objects.get(run=run, step_id="confirm").status == "waiting"
        services.send_signal(run, "confirmed", {"confirmed": True, "by": "alice"}, sent_by=SYSTEM)
        engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert run.output == {
        "incident": "INC-7",
        "report": {"restarted": ["checkout-2"], "paged": 2, "confirmed_by": "alice"},
    }
