"""Bad definitions are refused with problems that name the step and the field."""

import pytest

from audit.actors import SYSTEM
from orchestrator import services
from orchestrator.definitions import DefinitionError, load_definition, validate_definition
from orchestrator.models import Workflow, WorkflowVersion


def problems(definition):
    return [(p.step, p.field, p.message) for p in validate_definition(definition)]


def test_a_valid_definition_has_no_problems():
    assert (
        problems(
            {
                "steps": [
                    {"id": "a", "type": "noop"},
                    {"id": "b", "type": "noop", "depends_on": ["a"]},
                ]
            }
        )
        == []
    )


def test_cycle_is_named_with_its_path():
    found = problems(
        {
            "steps": [
                {"id": "a", "type": "noop", "depends_on": ["c"]},
                {"id": "b", "type": "noop", "depends_on": ["a"]},
                {"id": "c", "type": "noop", "depends_on": ["b"]},
            ]
        }
    )
    assert len(found) == 1
    step, field, message = found[0]
    assert field == "depends_on"
    assert message.startswith("dependency cycle: ")
    assert set(message.removeprefix("dependency cycle: ").split(" → ")) == {"a", "b", "c"}


def test_unknown_step_dependency():
    assert problems({"steps": [{"id": "a", "type": "noop", "depends_on": ["ghost"]}]}) == [
        ("a", "depends_on", "unknown step 'ghost'")
    ]


def test_self_dependency_and_duplicate_ids():
    found = problems(
        {"steps": [{"id": "a", "type": "noop", "depends_on": ["a"]}, {"id": "a", "type": "noop"}]}
    )
    assert ("a", "id", "this id is used by more than one step") in found


def test_unknown_tool_and_step_type():
    found = problems(
        {"steps": [{"id": "t", "type": "tool", "tool": "no.such"}, {"id": "x", "type": "teleport"}]}
    )
    assert ("t", "tool", "no tool is registered as 'no.such'") in found
    assert any(
        step == "x" and field == "type" and "unknown step type 'teleport'" in m
        for step, field, m in found
    )


def test_literal_tool_arguments_are_checked_against_the_schema():
    found = problems({"steps": [{"id": "t", "type": "tool", "tool": "test.add", "args": {"a": 1}}]})
    assert found == [("t", "args", "(arguments): 'b' is a required property")]


def test_bad_expression_and_bad_template():
    found = problems(
        {
            "steps": [
                {"id": "w", "type": "noop", "when": "input.x >"},
                {"id": "s", "type": "set", "value": "{{ input.x "},
            ]
        }
    )
    assert [(s, f) for s, f, _ in found] == [("w", "when"), ("s", "value")]
    assert "does not parse" in found[0][2]


def test_reading_a_step_that_is_not_upstream_is_refused():
    found = problems(
        {
            "steps": [
                {"id": "a", "type": "set", "value": 1},
                {"id": "b", "type": "set", "value": "{{ steps.a }}"},
            ]
        }
    )
    assert found == [("b", "value", "reads step 'a', which is not upstream (add it to depends_on)")]


def test_missing_input_is_refused_when_an_input_schema_is_declared():
    found = problems(
        {
            "input_schema": {"type": "object", "properties": {"amount": {"type": "number"}}},
            "steps": [{"id": "a", "type": "set", "value": "{{ input.amout }}"}],
        }
    )
    assert found == [("a", "value", "reads input 'amout', which input_schema does not declare")]


def test_unknown_field_and_wrong_types_name_the_step():
    found = problems(
        {
            "steps": [
                {"id": "a", "type": "sleep", "duration": "soon"},
                {"id": "b", "type": "noop", "retry": {"max_attempts": 0}},
                {"id": "c", "type": "noop", "colour": "red"},
                {"id": "d", "type": "wait"},
            ]
        }
    )
    fields = {(s, f) for s, f, _ in found}
    assert ("a", "duration") in fields
    assert ("b", "retry.max_attempts") in fields
    assert ("c", "colour") in fields
    assert ("d", "signal") in fields


def test_item_is_only_known_inside_foreach():
    assert problems({"steps": [{"id": "a", "type": "set", "value": "{{ item }}"}]}) == [
        ("a", "value", "unknown variable 'item'")
    ]


def test_not_an_object_and_not_yaml():
    with pytest.raises(DefinitionError, match="not valid JSON or YAML"):
        load_definition("steps: [unclosed")
    with pytest.raises(DefinitionError, match="an object with a 'steps' list"):
        load_definition("- just a list")
    assert problems({"steps": []})[0][2] == "[] should be non-empty"


@pytest.mark.django_db
def test_invalid_definition_publishes_nothing():
    workflow = Workflow.objects.create(slug="w", name="W")
    with pytest.raises(DefinitionError) as raised:
        services.publish_version(
            workflow,
            {"steps": [{"id": "a", "type": "noop", "depends_on": ["b"]}]},
            actor=SYSTEM,
        )
    assert str(raised.value.problems[0]) == "step 'a', field 'depends_on': unknown step 'b'"
    assert not WorkflowVersion.objects.exists()


@pytest.mark.django_db
def test_starting_an_unknown_workflow_or_with_bad_input_is_refused(make_workflow):
    from orchestrator.models import WorkflowRun

    with pytest.raises(services.EngineError, match="no workflow has the slug 'nope'"):
        services.start_run("nope", started_by=SYSTEM)
    wf = make_workflow(
        {
            "input_schema": {
                "type": "object",
                "required": ["amount"],
                "properties": {"amount": {"type": "number"}},
            },
            "steps": [{"id": "a", "type": "noop"}],
        }
    )
    with pytest.raises(services.InvalidInput, match="'amount' is a required property"):
        services.start_run(wf, {}, started_by=SYSTEM)
    with pytest.raises(services.InvalidInput, match="amount: 'ten' is not of type 'number'"):
        services.start_run(wf, {"amount": "ten"}, started_by=SYSTEM)
    assert not WorkflowRun.objects.exists()


def test_a_step_without_id_is_located_by_its_position():
    found = problems(
        {"steps": [{"type": "noop"}, {"id": "b", "type": "noop", "depends_on": ["a"]}]}
    )
    assert ("#1", None, "'id' is a required property") in found
    assert ("b", "depends_on", "unknown step 'a'") in found
