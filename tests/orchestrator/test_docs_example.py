"""The complete example in docs/workflows.md validates, and runs as the text says it does."""

import re
from pathlib import Path

import pytest
import yaml

from audit import clock
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


def test_every_yaml_block_in_the_docs_parses():
    """Every ```yaml block of the docs parses; finding none (or fewer than the fences) fails."""
    found = {}
    for doc in sorted([*DOC.parent.glob("*.md"), DOC.parents[1] / "README.md"]):
        text = doc.read_text()
        blocks = re.findall(r"^```yaml\n(.*?)\n```$", text, re.DOTALL | re.MULTILINE)
        assert len(blocks) == text.count("```yaml"), f"{doc.name}: a yaml fence was not read"
        for block in blocks:
            assert isinstance(yaml.safe_load(block), dict | list), f"{doc.name}: {block[:60]}"
        found[doc.name] = len(blocks)
    assert found["workflows.md"] >= 1, "no yaml block found in docs/workflows.md"
    assert sum(found.values()) >= 2, f"too few yaml blocks found in the docs: {found}"


@pytest.mark.django_db
def test_the_foreach_expressions_the_doc_offers_are_accepted_and_run(make_workflow):
    """The `foreach` section's examples, read from its text, publish and run one item each."""
    section = DOC.read_text().split("## `foreach`", 1)[1].split("\n## ", 1)[0]
    offered = re.findall(r"`([^`]+)`", section.split("When the step becomes ready", 1)[0])
    assert "range(3)" in offered, offered
    for expression in offered[1:]:  # the first is the field's own name
        wf = make_workflow(
            {
                "steps": [
                    {"id": "lookup", "type": "set", "value": {"owners": ["ann", "bob"]}},
                    {
                        "id": "each",
                        "type": "set",
                        "depends_on": ["lookup"],
                        "foreach": expression,
                        "value": "{{ item }}",
                    },
                ]
            }
        )
        run = services.start_run(wf, {"hosts": ["h1"]})
        engine.drain()
        run.refresh_from_db()
        assert run.status == "succeeded", (expression, run.error)
        assert run.output["each"], expression


@pytest.mark.django_db
def test_the_complete_example_runs_as_described():
    workflow = services.create_workflow(
        slug="docs-example", name="Docs example", definition=yaml_block_after(MARKER)
    )
    run_input = {"incident": "INC-7", "service": "checkout", "settle": "10s"}
    with clock.frozen(seed=1) as frozen:
        run = services.start_run(workflow, run_input)
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
        services.send_signal(run, "confirmed", {"confirmed": True, "by": "alice"})
        engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert run.output == {
        "incident": "INC-7",
        "report": {"restarted": ["checkout-2"], "paged": 2, "confirmed_by": "alice"},
    }
