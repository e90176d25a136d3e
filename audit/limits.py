"""What Steward can store, declared once: the limits on values from outside, and their check.

Every value that comes from a model, a tool, a request body or a webhook ends up in a
PostgreSQL `jsonb` column (journal, step input and output, signals) and in the audit log's
canonical JSON (audit/evidence.py). Those refuse, each in its own way and far from the cause,
what JSON cannot carry exactly: a NUL character (`jsonb` cannot hold U+0000), an unpaired
surrogate (not Unicode), NaN and the infinities, integers beyond ±(2⁵³−1) (RFC 8785 writes
every number as a double), and very deep nesting (a `RecursionError` in Python's encoders).
`problem(value)` names the first of these, with where it is, so that the place the value
enters can refuse it with that reason: a refusal the model is told about, a failed attempt,
an invalid request. `clean(value)` makes a storable copy of a value we produce ourselves and
must record whatever it holds (an error message quoting a provider's reply).

The limits are here so that every app reads the same ones (audit is the lowest app: all may
import it). `settings.STEWARD_LIMITS` overrides any of them by name; docs/agents.md lists them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from django.conf import settings

MAX_EXACT_INT = 2**53 - 1  # fixed by JSON itself (RFC 8785), not a setting

DEFAULTS: dict[str, int] = {
    # any JSON value from outside: a model reply's parts, a tool result, a run input, a payload
    "max_depth": 64,  # nested arrays and objects
    "max_string_chars": 1_000_000,  # one string or object key
    "max_value_chars": 4_000_000,  # a whole value, as JSON text (about)
    # a model reply
    "max_tool_calls_per_reply": 64,
    "max_tool_name_chars": 128,
    "max_call_id_chars": 200,
    "max_model_name_chars": 200,
    "max_token_count": 100_000_000,  # input or output tokens of one model call
    # a request: names and keys that become columns
    "max_signal_name_chars": 200,
    "max_business_key_chars": 200,
    "max_idempotency_key_chars": 200,
    "max_request_id_chars": 64,
}

_SIMPLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
UNSTORABLE_MARKER = "$unstorable"


class Unstorable(ValueError):
    """A value that cannot be stored as JSON; the message says what is wrong and where."""


def limit(name: str) -> int:
    """Return a limit by name: `settings.STEWARD_LIMITS` first, then the default."""
    overrides = getattr(settings, "STEWARD_LIMITS", None) or {}
    return int(overrides.get(name, DEFAULTS[name]))


def limits() -> dict[str, int]:
    """Return every limit in force (the defaults with the settings' overrides)."""
    return {name: limit(name) for name in DEFAULTS}


def text_problem(text: str, max_chars: int | None = None) -> str:
    """Return why a string cannot be stored ('' when it can)."""
    if max_chars is None:
        max_chars = limit("max_string_chars")
    if len(text) > max_chars:
        return f"is {len(text):,} characters long, over the limit of {max_chars:,}"
    if "\x00" in text:
        return f"holds a NUL character (U+0000) at position {text.index(chr(0))}"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(text[exc.start])
            return f"holds an unpaired surrogate (U+{code:04X}) at position {exc.start}"
    return ""


def _number_problem(value: Any) -> str:
    """Return why a number cannot be stored ('' when it can)."""
    if isinstance(value, float):
        if math.isnan(value):
            return "is NaN, which JSON cannot hold"
        if math.isinf(value):
            return f"is {'-' if value < 0 else ''}Infinity, which JSON cannot hold"
        return ""
    if -MAX_EXACT_INT <= value <= MAX_EXACT_INT:
        return ""
    digits = len(str(abs(value))) if value.bit_length() < 10_000 else value.bit_length() * 0.30103
    return (
        f"is an integer of {digits:.0f} digits, beyond ±(2^53-1), "
        "the integers JSON numbers carry exactly"
    )


def _step(path: str, key: Any) -> str:
    """Return the path to a member: `a.b`, `a["odd key"]` or `a[3]`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if isinstance(key, str) and _SIMPLE_KEY.match(key):
        return f"{path}.{key}"
    shown = clean_text(str(key), 40)
    return f"{path}[{json.dumps(shown, ensure_ascii=False)}]"


def _shown(path: str) -> str:
    """Return a path short enough for a message (its start and its end)."""
    return path if len(path) <= 120 else f"{path[:60]}…{path[-50:]}"


def problem(
    value: Any,
    *,
    what: str = "value",
    max_depth: int | None = None,
    max_string_chars: int | None = None,
    max_value_chars: int | None = None,
) -> str:
    """Return why a value cannot be stored as JSON, naming where ('' when it can be stored).

    Walks the value without recursion, so a hostile depth cannot exhaust the stack.
    """
    max_depth = limit("max_depth") if max_depth is None else max_depth
    max_string = limit("max_string_chars") if max_string_chars is None else max_string_chars
    budget = limit("max_value_chars") if max_value_chars is None else max_value_chars
    stack: list[tuple[str, Any, int]] = [(what, value, 0)]
    size = 0
    while stack:
        path, item, depth = stack.pop()
        kind = type(item)
        if kind is str:
            size += len(item) + 2
            if why := text_problem(item, max_string):
                return f"{_shown(path)} {why}"
        elif item is None or kind is bool:
            size += 4
        elif isinstance(item, int | float):
            size += 8
            if why := _number_problem(item):
                return f"{_shown(path)} {why}"
        elif isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                return f"{_shown(path)} is nested deeper than {max_depth} levels"
            size += 2
            if isinstance(item, dict):
                members = []
                for key, member in item.items():
                    if not isinstance(key, str):
                        return f"{_shown(path)} has an object key that is not a string"
                    size += len(key) + 3
                    if why := text_problem(key, max_string):
                        return f"{_shown(_step(path, key))} (the key) {why}"
                    members.append((_step(path, key), member, depth + 1))
            else:
                members = [(_step(path, n), member, depth + 1) for n, member in enumerate(item)]
                size += len(item)
            stack.extend(reversed(members))
        elif isinstance(item, str):
            size += len(item) + 2
            if why := text_problem(item, max_string):
                return f"{_shown(path)} {why}"
        else:
            return f"{_shown(path)} is of type {kind.__name__}, not a JSON value"
        if size > budget:
            return f"{what} is over {budget:,} characters of JSON"
    return ""


def check(value: Any, *, what: str = "value", **overrides) -> None:
    """Raise Unstorable naming what is wrong when a value cannot be stored as JSON."""
    if why := problem(value, what=what, **overrides):
        raise Unstorable(why)


def clean_text(text: str, max_chars: int | None = None) -> str:
    """Return a string that can be stored: NUL and unpaired surrogates shown as U+FFFD, clipped."""
    if max_chars is None:
        max_chars = limit("max_string_chars")
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a str holds surrogates only unpaired: JSON pairs combine
            text = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    if len(text) > max_chars:
        text = text[: max(max_chars - 1, 0)] + "…"
    return text


def clean(value: Any, *, max_depth: int | None = None) -> Any:
    """Return a storable copy of a value we must record whatever it holds (an error, a reason).

    Strings are cleaned (clean_text), numbers JSON cannot hold become their text, anything not
    JSON its repr, and what lies deeper than the limit "…".
    """
    max_depth = limit("max_depth") if max_depth is None else max_depth
    max_string = limit("max_string_chars")

    def copy(item: Any, depth: int) -> Any:
        if isinstance(item, str):
            return clean_text(item, max_string)
        if item is None or isinstance(item, bool):
            return item
        if isinstance(item, int | float):
            return item if not _number_problem(item) else clean_text(repr(item)[:60], 60)
        if isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                return "…"
            if isinstance(item, dict):
                return {clean_text(str(k), max_string): copy(v, depth + 1) for k, v in item.items()}
            return [copy(member, depth + 1) for member in item]
        return clean_text(repr(item), 1000)

    return copy(value, 0)


def fingerprint(value: Any) -> str:
    """Return a SHA-256 of any value, storable or not (what a replaced value is known by)."""
    try:
        text = json.dumps(value, sort_keys=True, ensure_ascii=True, default=repr)
    except (TypeError, ValueError, RecursionError):
        try:
            text = repr(value)
        except RecursionError:
            text = f"<{type(value).__name__} nested too deeply to read>"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def unstorable_marker(value: Any, reason: str) -> dict[str, Any]:
    """Return what is stored instead of a value that cannot be: its SHA-256 and the reason."""
    return {UNSTORABLE_MARKER: {"reason": clean_text(reason, 2000), "sha256": fingerprint(value)}}


def marked_unstorable(value: Any) -> dict[str, Any] | None:
    """Return the marker's content when a stored value is an unstorable marker (else None)."""
    if isinstance(value, dict) and len(value) == 1 and UNSTORABLE_MARKER in value:
        marker = value[UNSTORABLE_MARKER]
        if isinstance(marker, dict) and {"reason", "sha256"} <= set(marker):
            return marker
    return None
