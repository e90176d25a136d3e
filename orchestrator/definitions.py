"""Workflow definitions: the JSON Schema, the graph checks, and the compiled form the engine runs.

A definition is data (JSON or YAML). `validate_definition` refuses a bad one with problems that
name the step and the field; `compile_definition` turns a valid one into immutable objects that
are cached per published version.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from governance import expressions
from orchestrator.durations import parse_duration
from orchestrator.steptypes import step_types

DURATION_SCHEMA = {
    "oneOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?\s*[smhdw]\s*)+$"},
    ]
}

RETRY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
        "initial_interval": DURATION_SCHEMA,
        "backoff_multiplier": {"type": "number", "minimum": 1},
        "max_interval": DURATION_SCHEMA,
        "retry_on": {"type": "array", "items": {"type": "string"}},
        "no_retry_on": {"type": "array", "items": {"type": "string"}},
    },
}

ON_FAILURE_CHOICES = ["fail", "continue"]

COMMON_STEP_PROPERTIES = {
    "id": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,99}$"},
    "type": {"type": "string"},
    "description": {"type": "string"},
    "depends_on": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    "when": {"type": "string", "minLength": 1},
    "foreach": {"type": "string", "minLength": 1},
    "retry": RETRY_SCHEMA,
    "timeout": DURATION_SCHEMA,
    "on_failure": {"type": "string"},
}

DEFINITION_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Steward workflow definition",
    "type": "object",
    "required": ["steps"],
    "additionalProperties": False,
    "properties": {
        "description": {"type": "string"},
        "input_schema": {"type": "object"},
        "defaults": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"retry": RETRY_SCHEMA, "timeout": DURATION_SCHEMA},
        },
        "steps": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type"],
                "properties": COMMON_STEP_PROPERTIES,
            },
        },
        "output": {},
        # What counts as the run's acknowledgement on the KPI page (time to acknowledge): the
        # first success of a step, or the first arrival of a signal.
        "acknowledgement": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "step": {"type": "string"},
                "signal": {"type": "string", "minLength": 1},
            },
        },
    },
}
_definition_validator = Draft202012Validator(DEFINITION_SCHEMA)

DEFAULT_RETRY = {
    "max_attempts": 3,
    "initial_interval": 1.0,
    "backoff_multiplier": 2.0,
    "max_interval": 300.0,
    "retry_on": ["*"],
    "no_retry_on": [],
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition, located by step and field."""

    message: str
    step: str | None = None
    field: str | None = None

    def __str__(self):
        where = []
        if self.step:
            where.append(f"step {self.step!r}")
        if self.field:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def as_dict(self) -> dict[str, Any]:
        """Return the problem as JSON for API responses."""
        return {"step": self.step, "field": self.field, "message": self.message}


class DefinitionError(ValueError):
    """A workflow definition that cannot be published, with every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("invalid workflow definition: " + "; ".join(str(p) for p in problems))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed step is tried again."""

    max_attempts: int
    initial_interval: float
    backoff_multiplier: float
    max_interval: float
    retry_on: tuple[str, ...]
    no_retry_on: tuple[str, ...]

    def allows(self, error_types: list[str]) -> bool:
        """Tell whether an error (its type and base type names) may be retried under this policy."""
        if any(name in self.no_retry_on for name in error_types):
            return False
        return "*" in self.retry_on or any(name in self.retry_on for name in error_types)

    def delay(self, attempt: int, rng) -> float:
        """Return the backoff before the attempt after `attempt`: full jitter, capped."""
        ceiling = min(
            self.max_interval, self.initial_interval * self.backoff_multiplier ** (attempt - 1)
        )
        return rng.uniform(0, ceiling)


@dataclass(frozen=True)
class StepDef:
    """A compiled step: its type, place in the graph, and policies."""

    id: str
    type: str
    spec: dict[str, Any]
    depends_on: tuple[str, ...]
    children: tuple[str, ...]
    when: str | None
    foreach: str | None
    retry: RetryPolicy
    timeout: float | None
    on_failure: str
    reads_steps: bool


@dataclass(frozen=True)
class WorkflowDef:
    """A compiled workflow: steps by id in definition order, and how to build the run output."""

    steps: dict[str, StepDef]
    roots: tuple[str, ...]
    output: Any
    input_schema: dict[str, Any] | None
    input_validator: Draft202012Validator | None = field(default=None, compare=False)
    acknowledgement: tuple[str, str] | None = None  # ("step" or "signal", its id or name)

    def input_errors(self, value: Any) -> list[str]:
        """Return every way a run input breaks the workflow's input schema."""
        if self.input_validator is None:
            return []
        return [
            f"{'/'.join(str(p) for p in e.absolute_path) or '(input)'}: {e.message}"
            for e in self.input_validator.iter_errors(value)
        ]


def load_definition(text: str) -> dict[str, Any]:
    """Parse a definition written as JSON or YAML."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DefinitionError([Problem(f"not valid JSON or YAML: {exc}")]) from exc
    if not isinstance(document, dict):
        raise DefinitionError([Problem("a definition is an object with a 'steps' list")])
    return document


def definition_digest(definition: dict[str, Any]) -> str:
    """Return the SHA-256 of a definition's canonical JSON."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def definition_text(definition: dict[str, Any] | None) -> str:
    """Render a definition as YAML with sorted keys: one stable text to compare versions by."""
    if definition is None:
        return ""
    return yaml.safe_dump(definition, sort_keys=True, allow_unicode=True, default_flow_style=False)


def definition_diff(
    old: dict[str, Any] | None, new: dict[str, Any], *, old_label: str, new_label: str
) -> str:
    """Return the unified diff of two definitions (against nothing for a first version)."""
    lines = difflib.unified_diff(
        definition_text(old).splitlines(keepends=True),
        definition_text(new).splitlines(keepends=True),
        fromfile=old_label,
        tofile=new_label,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def validate_definition(definition: Any) -> list[Problem]:
    """Return every problem with a definition: schema, step types, graph, and expressions."""
    errors = list(_definition_validator.iter_errors(definition))
    problems = [_schema_problem(error, definition) for error in errors]
    broken = {e.absolute_path[1] for e in errors if _is_step_path(e.absolute_path)}
    if any(not _is_step_path(e.absolute_path) for e in errors):
        return problems  # the document's shape is wrong: nothing more can be checked
    steps = definition["steps"]
    ids = [step.get("id") for step in steps]
    by_id: dict[str, dict] = {}
    for index, step in enumerate(steps):
        if index in broken:
            continue
        if step["id"] in by_id:
            problems.append(Problem("this id is used by more than one step", step["id"], "id"))
        by_id[step["id"]] = step
    for index, step in enumerate(steps):
        if index not in broken:
            problems += _step_problems(step, by_id)
    if problems:
        return problems
    problems += _cycle_problems(steps)
    if problems:
        return problems
    upstream = _upstream(steps)
    for step in steps:
        problems += _reference_problems(step, upstream[step["id"]], definition.get("input_schema"))
    if "output" in definition:
        problems += [
            Problem(f"bad template: {e}", None, "output")
            for e in expressions.check_template(definition["output"])
        ]
        for name in expressions.referenced_attributes(definition["output"], "steps") - set(ids):
            problems.append(Problem(f"refers to unknown step {name!r}", None, "output"))
    acknowledged_by = definition.get("acknowledgement", {}).get("step")
    if acknowledged_by is not None and acknowledged_by not in ids:
        problems.append(
            Problem(f"refers to unknown step {acknowledged_by!r}", None, "acknowledgement")
        )
    if "input_schema" in definition:
        try:
            Draft202012Validator.check_schema(definition["input_schema"])
        except SchemaError as exc:
            problems.append(
                Problem(f"not a valid JSON Schema: {exc.message}", None, "input_schema")
            )
    return problems


def _is_step_path(path) -> bool:
    """Tell whether a schema error's path points inside one step."""
    return len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int)


def _schema_problem(error, definition) -> Problem:
    """Turn a JSON Schema error into a problem naming the step and field."""
    path = list(error.absolute_path)
    step = None
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        try:
            step = definition["steps"][path[1]].get("id") or f"#{path[1] + 1}"
        except (AttributeError, IndexError, KeyError, TypeError):
            step = f"#{path[1] + 1}"
        path = path[2:]
    field_name = ".".join(str(p) for p in path) or None
    return Problem(error.message, step, field_name)


def _step_problems(step: dict, by_id: dict[str, dict]) -> list[Problem]:
    """Check one step's type, its type-specific fields, dependencies and expressions."""
    sid = step["id"]
    problems = []
    step_type = step_types().get(step["type"])
    if step_type is None:
        known = ", ".join(sorted(step_types()))
        return [Problem(f"unknown step type {step['type']!r} (known: {known})", sid, "type")]
    allowed = set(COMMON_STEP_PROPERTIES) | set(step_type.fields)
    for key in step:
        if key not in allowed:
            problems.append(Problem(f"unknown field for a {step['type']!r} step", sid, key))
    type_schema = {
        "type": "object",
        "properties": step_type.fields,
        "required": list(step_type.required),
    }
    for error in Draft202012Validator(type_schema).iter_errors(step):
        field_name = ".".join(str(p) for p in error.absolute_path) or (
            error.message.split("'")[1] if error.validator == "required" else None
        )
        problems.append(Problem(error.message, sid, field_name))
    if problems:
        return problems
    for dependency in step.get("depends_on", []):
        if dependency == sid:
            problems.append(Problem("a step cannot depend on itself", sid, "depends_on"))
        elif dependency not in by_id:
            problems.append(Problem(f"unknown step {dependency!r}", sid, "depends_on"))
    on_failure = step.get("on_failure", "fail")
    if on_failure not in on_failure_choices():
        problems.append(
            Problem(f"must be one of {', '.join(on_failure_choices())}", sid, "on_failure")
        )
    for name in ("when", "foreach"):
        if name in step and (error := expressions.check_expression(step[name])):
            problems.append(Problem(error, sid, name))
    for name in step_type.fields:
        if name in step:
            for error in expressions.check_template(step[name]):
                problems.append(Problem(f"bad template: {error}", sid, name))
    if not problems:
        problems += [Problem(message, sid, f) for f, message in step_type.check(step)]
    return problems


def _cycle_problems(steps: list[dict]) -> list[Problem]:
    """Find a dependency cycle and name the steps on it."""
    parents = {step["id"]: step.get("depends_on", []) for step in steps}
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        trail.append(node)
        for parent in parents[node]:
            if state.get(parent) == 1:
                return trail[trail.index(parent) :] + [parent]
            if parent not in state and (cycle := visit(parent)):
                return cycle
        trail.pop()
        state[node] = 2
        return None

    for step in steps:
        if step["id"] not in state and (cycle := visit(step["id"])):
            path = " → ".join(reversed(cycle))
            return [Problem(f"dependency cycle: {path}", cycle[0], "depends_on")]
    return []


def _upstream(steps: list[dict]) -> dict[str, set[str]]:
    """Return, for each step, every step it (transitively) depends on."""
    parents = {step["id"]: step.get("depends_on", []) for step in steps}
    memo: dict[str, set[str]] = {}

    def ancestors(node: str) -> set[str]:
        if node not in memo:
            found: set[str] = set()
            for parent in parents[node]:
                found |= {parent} | ancestors(parent)
            memo[node] = found
        return memo[node]

    return {sid: ancestors(sid) for sid in parents}


def _reference_problems(step: dict, upstream: set[str], input_schema: dict | None) -> list[Problem]:
    """Check that templates only read steps upstream of this one and declared inputs."""
    problems = []
    sid = step["id"]
    step_type = step_types()[step["type"]]
    sources: list[tuple[str, Any, bool]] = [
        (n, step[n], False) for n in step_type.fields if n in step
    ]
    sources += [(n, step[n], True) for n in ("when", "foreach") if n in step]
    declared = set((input_schema or {}).get("properties", {})) if input_schema else None
    for name, value, is_expression in sources:
        if is_expression:
            steps_read = expressions.expression_attributes(value, "steps")
            inputs_read = expressions.expression_attributes(value, "input")
            variables = expressions.expression_names(value)
        else:
            steps_read = expressions.referenced_attributes(value, "steps")
            inputs_read = expressions.referenced_attributes(value, "input")
            variables = expressions.referenced_names(value)
        for other in sorted(steps_read - upstream):
            problems.append(
                Problem(
                    f"reads step {other!r}, which is not upstream (add it to depends_on)", sid, name
                )
            )
        if declared is not None:
            for missing in sorted(inputs_read - declared):
                problems.append(
                    Problem(
                        f"reads input {missing!r}, which input_schema does not declare", sid, name
                    )
                )
        allowed_names = {"input", "steps", "run"} | (
            {"item", "index"} if "foreach" in step else set()
        )
        for unknown in sorted(variables - allowed_names):
            problems.append(Problem(f"unknown variable {unknown!r}", sid, name))
    return problems


def _on_failure_extra() -> list[str]:
    """Return on_failure choices that other apps add (e.g. escalate)."""
    from orchestrator.steptypes import failure_handlers

    return sorted(failure_handlers())


def on_failure_choices() -> list[str]:
    """Return every accepted on_failure value."""
    return ON_FAILURE_CHOICES + _on_failure_extra()


def compile_definition(definition: dict[str, Any]) -> WorkflowDef:
    """Turn a valid definition into the engine's immutable form."""
    defaults = definition.get("defaults", {})
    children: dict[str, list[str]] = {step["id"]: [] for step in definition["steps"]}
    for step in definition["steps"]:
        for parent in step.get("depends_on", []):
            children[parent].append(step["id"])
    compiled = {}
    for step in definition["steps"]:
        retry = {**DEFAULT_RETRY, **defaults.get("retry", {}), **step.get("retry", {})}
        timeout = step.get("timeout", defaults.get("timeout"))
        step_type = step_types()[step["type"]]
        reads = any(
            "steps" in expressions.referenced_names(step[name])
            for name in step_type.fields
            if name in step
        ) or any(
            "steps" in expressions.expression_names(step[n])
            for n in ("when", "foreach")
            if n in step
        )
        compiled[step["id"]] = StepDef(
            id=step["id"],
            type=step["type"],
            spec=step,
            depends_on=tuple(step.get("depends_on", [])),
            children=tuple(children[step["id"]]),
            when=step.get("when"),
            foreach=step.get("foreach"),
            retry=RetryPolicy(
                max_attempts=retry["max_attempts"],
                initial_interval=parse_duration(retry["initial_interval"]),
                backoff_multiplier=float(retry["backoff_multiplier"]),
                max_interval=parse_duration(retry["max_interval"]),
                retry_on=tuple(retry["retry_on"]),
                no_retry_on=tuple(retry["no_retry_on"]),
            ),
            timeout=parse_duration(timeout) if timeout is not None else None,
            on_failure=step.get("on_failure", "fail"),
            reads_steps=reads,
        )
    input_schema = definition.get("input_schema")
    return WorkflowDef(
        steps=compiled,
        roots=tuple(sid for sid, step in compiled.items() if not step.depends_on),
        output=definition.get("output"),
        input_schema=input_schema,
        input_validator=Draft202012Validator(input_schema) if input_schema else None,
        acknowledgement=next(iter(definition.get("acknowledgement", {}).items()), None),
    )


@lru_cache(maxsize=512)
def compiled_version(version_id: int) -> WorkflowDef:
    """Return the compiled definition of a published version; versions are immutable, so cache."""
    from orchestrator.models import WorkflowVersion

    version = WorkflowVersion.objects.only("definition").get(pk=version_id)
    return compile_definition(version.definition)
