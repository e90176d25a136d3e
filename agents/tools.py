"""The tool registry: Python callables that workflow steps and agents may call.

A tool declares its name, a JSON Schema for its arguments, a description for models, a risk
level, whether it has side effects, and the target object it acts on with the permission an
agent needs there (`target(arguments, context)` returns a model instance, a model class for
creations, or None; `permission` is the action: view, add, change, read, write...; and
`target_model` names that model statically, for the admin and the agent review). Arguments
are validated before every call, and every call receives an idempotency key that stays the
same across redeliveries of its step. Agents reach tools only through the policy enforcement
point (agents/actions/enforcement.py); the governed `Tool` row mirrors each registered tool.

A tool may also resolve its arguments to the canonical things it acts on
(`canonical(arguments, context)` returns them: a catalogue's name for a service, the service
its hosts really belong to, a normalised identifier, facts such as the environment) or refuse
them with `ArgumentsRefused` when they do not resolve. The enforcement point resolves them
right after the schema check; the permission, the policy, the approval digest, the records and
the call itself then all see the canonical arguments, so what is approved is what runs.
"""

from __future__ import annotations

import importlib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from audit import limits


def recordable_arguments(arguments: Any, digested: tuple[str, ...]) -> Any:
    """Return arguments with the named ones replaced by {"sha256": ...} (others unchanged)."""
    if not digested or not isinstance(arguments, dict):
        return arguments
    from governance.actions.common import digest

    return {
        name: {"sha256": digest(value)} if name in digested else value
        for name, value in arguments.items()
    }


def storable_outcome(name: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """Return a call's outcome as it can be journaled and audited (audit/limits.py).

    An outcome that cannot be stored is replaced by a failure that says the tool ran, why its
    result cannot be kept, and the result's SHA-256: recorded like any outcome, so nothing
    runs the tool again for it.
    """
    why = limits.problem(outcome, what="outcome")
    if not why:
        return outcome
    return {
        "ok": False,
        "executed": True,
        "error": "ResultNotStorable",
        "message": f"{name} ran, but its result cannot be stored: {why}",
        "sha256": limits.fingerprint(outcome),
    }


class ToolError(Exception):
    """A tool failed; retryable unless the subclass says otherwise."""

    retryable = True


class FatalToolError(ToolError):
    """A tool failed in a way that another attempt cannot fix."""

    retryable = False


class ArgumentsInvalid(FatalToolError):
    """The arguments of a tool call do not match its schema."""


class ArgumentsRefused(ArgumentsInvalid):
    """The arguments do not resolve to the canonical things the tool acts on."""


def canonical_name(value: Any, what: str = "name") -> str:
    """Return an identifier's one canonical spelling; refuse what could only be guessed at.

    NFKC-normalised, trimmed and lower-cased, it must be plain ASCII letters, digits, '.', '_'
    and '-': a look-alike letter from another script, a zero-width or control character, or a
    space inside is refused (naming the character), never mapped to the nearest known name.
    """
    if not isinstance(value, str):
        raise ArgumentsRefused(f"{what} must be a string, not {type(value).__name__}")
    normal = unicodedata.normalize("NFKC", value).strip().lower()
    for char in normal:
        if not (char.isascii() and (char.isalnum() or char in "._-")):
            label = unicodedata.name(char, "a control or unassigned character")
            raise ArgumentsRefused(
                f"{what} {value!r} contains {label} (U+{ord(char):04X}); only ASCII letters, "
                "digits, '.', '_' and '-' are accepted"
            )
    if not normal:
        raise ArgumentsRefused(f"{what} {value!r} is empty")
    return normal


class UnknownTool(LookupError):
    """No tool is registered under that name."""


@dataclass(frozen=True)
class ToolContext:
    """What a tool learns about the call: its idempotency key and where it runs."""

    idempotency_key: str
    run_id: int | None = None
    step_id: str = ""
    item_index: int | None = None
    attempt: int = 1
    actor_id: int | None = None
    agent_id: int | None = None
    workflow_id: int | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A registered tool and the facts the control layer needs about it."""

    name: str
    func: Callable[[dict[str, Any], ToolContext], Any]
    schema: dict[str, Any]
    description: str = ""
    side_effects: bool = True
    risk: str = "low"
    validator: Draft202012Validator = field(repr=False, compare=False, default=None)
    target: Callable[[dict[str, Any], ToolContext], Any] | None = field(
        default=None, repr=False, compare=False
    )
    permission: str = ""
    target_model: str | Callable[[dict[str, Any]], list[str]] = ""
    digested_arguments: tuple[str, ...] = ()
    canonical: Callable[[dict[str, Any], ToolContext], dict[str, Any]] | None = field(
        default=None, repr=False, compare=False
    )

    def recordable(self, arguments: Any) -> Any:
        """Return the arguments as records keep them: the digested ones by SHA-256 only."""
        return recordable_arguments(arguments, self.digested_arguments)

    def target_labels(self, config: dict[str, Any] | None = None) -> list[str]:
        """Return the models ('app.model') this tool acts on, given its row's settings."""
        if callable(self.target_model):
            return sorted(self.target_model(config or {}))
        return [self.target_model] if self.target_model else []

    def argument_errors(self, arguments: Any) -> list[str]:
        """Return every way the arguments break the schema, as readable messages."""
        errors = []
        for error in sorted(self.validator.iter_errors(arguments), key=lambda e: list(e.path)):
            location = "/".join(str(part) for part in error.absolute_path) or "(arguments)"
            errors.append(f"{location}: {error.message}")
        return errors

    def canonical_arguments(self, arguments: dict[str, Any], context: ToolContext) -> dict:
        """Return schema-valid arguments resolved to what the call acts on (or ArgumentsRefused).

        The canonical form is checked against the schema and must resolve to itself, so a call
        given canonical arguments (as the enforcement point gives them) runs with exactly those.
        """
        if self.canonical is None:
            return arguments
        resolved = self.canonical(arguments, context)
        if errors := self.argument_errors(resolved):
            raise ArgumentsRefused(
                f"tool {self.name!r} resolved its arguments to an invalid form: "
                + "; ".join(errors)
            )
        if resolved != arguments and self.canonical(resolved, context) != resolved:
            raise ArgumentsRefused(f"tool {self.name!r} does not resolve its arguments stably")
        return resolved

    def call(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Validate the arguments, resolve them to their canonical form, then call the tool."""
        errors = self.argument_errors(arguments)
        if errors:
            raise ArgumentsInvalid(
                f"arguments of tool {self.name!r} are invalid: " + "; ".join(errors)
            )
        return self.func(self.canonical_arguments(arguments, context), context)


_registry: dict[str, ToolSpec] = {}
_modules_loaded = False


def tool(
    name: str,
    *,
    schema: dict[str, Any] | None = None,
    description: str = "",
    side_effects: bool = True,
    risk: str = "low",
    target: Callable[[dict[str, Any], ToolContext], Any] | None = None,
    permission: str = "",
    target_model: str | Callable[[dict[str, Any]], list[str]] = "",
    digested_arguments: tuple[str, ...] = (),
    canonical: Callable[[dict[str, Any], ToolContext], dict[str, Any]] | None = None,
):
    """Register the decorated callable `func(arguments, context)` as a tool.

    `target_model` names the model `target` returns ('agents.ticket'), or computes the models
    from the tool row's settings; the admin shows it and the agent review page checks the
    agent's roles against it. `digested_arguments` are kept by their SHA-256 only in every
    record of a call (journal, invocation, audit): values whose retention the tool governs.
    `canonical(arguments, context)` returns the arguments resolved to what the call acts on, or
    raises ArgumentsRefused; the call, its policy decision and its approval all use its result.
    """
    schema = schema if schema is not None else {"type": "object"}
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"tool {name!r} has an invalid argument schema: {exc.message}") from exc

    def register(func):
        _registry[name] = ToolSpec(
            name=name,
            func=func,
            schema=schema,
            description=description or (func.__doc__ or "").strip(),
            side_effects=side_effects,
            risk=risk,
            validator=Draft202012Validator(schema),
            target=target,
            permission=permission,
            target_model=target_model,
            digested_arguments=tuple(digested_arguments),
            canonical=canonical,
        )
        return func

    return register


def load_tool_modules() -> None:
    """Import the modules named in settings.STEWARD_TOOL_MODULES so their tools register."""
    global _modules_loaded
    if _modules_loaded:
        return
    for module in getattr(settings, "STEWARD_TOOL_MODULES", []):
        importlib.import_module(module)
    _modules_loaded = True


def get_tool(name: str) -> ToolSpec:
    """Return the tool registered under a name."""
    load_tool_modules()
    try:
        return _registry[name]
    except KeyError:
        raise UnknownTool(f"no tool is registered as {name!r}") from None


def registered_tools() -> dict[str, ToolSpec]:
    """Return every registered tool by name."""
    load_tool_modules()
    return dict(_registry)
