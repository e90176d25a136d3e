"""The sandboxed expression and template language shared by workflows and policies.

Templates are Jinja2 rendered in a SandboxedEnvironment that returns native Python values, so
`"{{ steps.fetch.items }}"` yields the list itself, not its text. Nothing here calls `eval`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes
from jinja2.nativetypes import NativeCodeGenerator, NativeTemplate
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ExpressionError(ValueError):
    """An expression or template that does not parse or cannot be evaluated."""


class _SandboxedNativeEnvironment(ImmutableSandboxedEnvironment):
    """A sandbox that returns native values and refuses to mutate the data it reads."""

    code_generator_class = NativeCodeGenerator
    template_class = NativeTemplate
    concat = staticmethod(NativeTemplate.environment_class.concat)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Prefer a mapping's key to its method, so `steps.fetch.items` reads the data."""
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_environment = _SandboxedNativeEnvironment(undefined=StrictUndefined, autoescape=False)
_environment.filters["tojson_safe"] = lambda value: value


def _is_template(value: str) -> bool:
    """Tell whether a string contains template syntax."""
    return "{{" in value or "{%" in value


@lru_cache(maxsize=4096)
def _compile_template(source: str):
    """Compile a template once; definitions are immutable so their templates can be cached."""
    try:
        return _environment.from_string(source)
    except TemplateError as exc:
        raise ExpressionError(f"template does not parse: {exc}") from exc


@lru_cache(maxsize=4096)
def _compile_expression(source: str):
    """Compile a bare expression once."""
    try:
        return _environment.compile_expression(source, undefined_to_none=False)
    except TemplateError as exc:
        raise ExpressionError(f"expression does not parse: {exc}") from exc


def check_template(value: Any) -> list[str]:
    """Return the parse errors of every template string inside a JSON value."""
    errors: list[str] = []
    for text in _strings(value):
        if _is_template(text):
            try:
                _compile_template(text)
            except ExpressionError as exc:
                errors.append(f"{text!r}: {exc}")
    return errors


def check_expression(source: str) -> str | None:
    """Return the parse error of an expression, or None when it is valid."""
    try:
        _compile_expression(source)
    except ExpressionError as exc:
        return str(exc)
    return None


def referenced_names(value: Any) -> set[str]:
    """Return the top-level variable names used by the templates inside a JSON value."""
    names: set[str] = set()
    for text in _strings(value):
        if _is_template(text):
            names |= meta.find_undeclared_variables(_environment.parse(text))
    return names


def expression_names(source: str) -> set[str]:
    """Return the top-level variable names an expression uses."""
    return meta.find_undeclared_variables(_environment.parse("{{ " + source + " }}"))


def referenced_attributes(value: Any, root: str) -> set[str]:
    """Return the attribute names read directly from `root` (e.g. step ids under `steps`)."""
    found: set[str] = set()
    for text in _strings(value):
        if _is_template(text):
            found |= _attributes_of(_environment.parse(text), root)
    return found


def expression_attributes(source: str, root: str) -> set[str]:
    """Return the attribute names an expression reads directly from `root`."""
    return _attributes_of(_environment.parse("{{ " + source + " }}"), root)


def _attributes_of(tree: nodes.Node, root: str) -> set[str]:
    """Collect `root.x` and `root['x']` accesses in a parsed template."""
    found = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node.node, nodes.Name) and node.node.name == root:
            if isinstance(node, nodes.Getattr):
                found.add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                found.add(node.arg.value)
    return found


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render every template string inside a JSON value against a context, keeping native types."""
    if isinstance(value, str):
        if not _is_template(value):
            return value
        try:
            result = _compile_template(value).render(context)
        except Exception as exc:  # undefined names, sandbox refusals, type errors
            raise ExpressionError(f"cannot render {value!r}: {exc}") from exc
        return _defined(result, value)
    if isinstance(value, list):
        return [render(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    return value


def evaluate(source: str, context: dict[str, Any]) -> Any:
    """Evaluate a bare expression (no braces) against a context."""
    expression = _compile_expression(source)
    try:
        result = expression(**context)
    except Exception as exc:
        raise ExpressionError(f"cannot evaluate {source!r}: {exc}") from exc
    return _defined(result, source)


def _defined(result: Any, source: str) -> Any:
    """Refuse an undefined result: native rendering would otherwise pass it through silently."""
    if isinstance(result, Undefined):
        raise ExpressionError(f"cannot evaluate {source!r}: {result._undefined_message}")
    return result


def _strings(value: Any):
    """Yield every string inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
