"""What every model provider shares: the neutral message format, responses, errors, and HTTP.

Messages are plain JSON so that they can be journaled and audited as they are:
`{"role": "system" | "user", "content": str}`,
`{"role": "assistant", "content": str | None, "tool_calls": [{"id", "name", "arguments"}]}` and
`{"role": "tool", "tool_call_id": str, "name": str, "content": str}`.
A client turns them into its provider's wire format and its reply into a `ModelResponse`.

Model output is untrusted input: a response only *proposes* tool calls; the control layer
decides what happens. Tool-call arguments that are not a JSON object, or that cannot be stored
(audit/limits.py), are kept as an error on the call, never repaired. A reply the engine cannot
record or should not act on (unstorable text, too many tool calls, an unusable tool name or
call id) is `refused`: it keeps a storable copy of its text, no tool call, and the reason the
model is told. A reply whose accounting is wrong (token counts, model name) is malformed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from dataclasses import replace as dataclass_replace
from decimal import Decimal
from typing import Any

import httpx

from audit import clock, limits

log = logging.getLogger(__name__)

# Tool names such as "ticket.create" are not valid function names for OpenAI or Anthropic
# (^[a-zA-Z0-9_-]{1,64}$): on the wire each "." becomes "__".
_WIRE_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# One HTTP client (a pool of kept-alive connections) per provider endpoint and process: a new
# client per call paid a TCP and TLS handshake every time (about 60 ms against a real provider).
# Keyed by process id too, so a forked worker child never shares its parent's sockets.
_clients: dict[tuple[int, str], httpx.Client] = {}
_clients_lock = threading.Lock()


def shared_client(endpoint: str) -> httpx.Client:
    """Return this process's HTTP client for one provider endpoint, creating it once."""
    key = (os.getpid(), endpoint)
    client = _clients.get(key)
    if client is not None:
        return client
    with _clients_lock:
        for stale in [k for k in _clients if k[0] != key[0]]:
            del _clients[stale]  # inherited through fork: left to the parent, never closed here
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = httpx.Client(follow_redirects=False)
    return client


def wire_name(name: str) -> str:
    """Return a tool name as providers accept it."""
    return name.replace(".", "__")


class ProviderError(Exception):
    """A model call that failed; `retryable` says whether another attempt may succeed."""

    retryable = True

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class ProviderUnavailable(ProviderError):
    """The provider did not answer in time, closed the connection, or said it is busy (429/5xx)."""


class MalformedResponse(ProviderError):
    """The provider answered with something that is not the protocol's JSON."""


class ProviderRefused(ProviderError):
    """The provider refused the request (400, 401, 403, 404...): another attempt will not help."""

    retryable = False


@dataclass(frozen=True)
class ToolDefinition:
    """A tool as offered to a model: its name, what it does, and its argument schema."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """A tool call a model proposed; `error` says why its arguments could not be read."""

    id: str
    name: str
    arguments: dict[str, Any] | None
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        """Return the call as JSON."""
        return asdict(self)


@dataclass(frozen=True)
class ModelResponse:
    """One model reply with its accounting: tokens, cost, latency and attempts."""

    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    model: str = ""
    provider: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 1
    stop_reason: str = ""
    refused: str = ""  # why nothing in this reply is acted on (the model is told)

    def as_json(self) -> dict[str, Any]:
        """Return the response as JSON (what the journal and the audit keep)."""
        data = asdict(self)
        data["tool_calls"] = [call.as_json() for call in self.tool_calls]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelResponse:
        """Rebuild a response from its journaled JSON."""
        calls = tuple(ToolCall(**call) for call in data.get("tool_calls") or [])
        return cls(**{**data, "tool_calls": calls})


@dataclass(frozen=True)
class ProviderConfig:
    """Everything a client needs for one call; the API key is never shown in its repr."""

    kind: str
    model: str
    name: str = ""
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    timeout: float = 60.0
    max_retries: int = 3
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 20.0
    max_output_tokens: int = 1024
    input_price_per_mtok: Decimal = Decimal(0)
    output_price_per_mtok: Decimal = Decimal(0)
    script: dict[str, Any] | None = None

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Return the price of a call from its token counts."""
        total = (
            Decimal(input_tokens) * Decimal(self.input_price_per_mtok)
            + Decimal(output_tokens) * Decimal(self.output_price_per_mtok)
        ) / Decimal(1_000_000)
        return float(round(total, 8))


class ModelClient:
    """The provider interface: `complete(messages, tools)` returns one ModelResponse."""

    kind = ""

    def __init__(self, config: ProviderConfig, *, sleep: Callable[[float], None] | None = None):
        self.config = config
        self.sleep = sleep or time.sleep

    def complete(
        self, messages: list[dict[str, Any]], tools: list[ToolDefinition], *, idempotency_key=""
    ) -> ModelResponse:
        """Ask the model for its next message given the conversation and the tools it may use."""
        raise NotImplementedError


class HTTPModelClient(ModelClient):
    """A client for a JSON-over-HTTP provider: timeouts, retries with backoff, redaction."""

    def headers(self) -> dict[str, str]:
        """Return the request headers (authentication included)."""
        raise NotImplementedError

    def url(self) -> str:
        """Return the endpoint of a completion."""
        raise NotImplementedError

    def body(self, messages: list[dict[str, Any]], tools: list[ToolDefinition]) -> dict:
        """Return the request body in the provider's format."""
        raise NotImplementedError

    def parse(self, data: Any, names: dict[str, str]) -> ModelResponse:
        """Turn a decoded reply into a response (tokens filled in; cost and latency later)."""
        raise NotImplementedError

    def complete(self, messages, tools, *, idempotency_key=""):
        """Post the conversation, retrying on timeouts, broken replies, 429 and 5xx."""
        names = {wire_name(tool.name): tool.name for tool in tools}
        payload = self.body(messages, tools)
        headers = self.headers()
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._post_once(payload, headers, names)
            except ProviderError as exc:
                exc.attempts = attempt
                if not exc.retryable or attempt > self.config.max_retries:
                    log.warning(
                        "model call to %s failed after %s attempt(s): %s",
                        self.config.name or self.kind,
                        attempt,
                        exc,
                    )
                    raise
                delay = self._backoff(attempt, getattr(exc, "retry_after", None))
                log.info(
                    "model call to %s failed (%s); attempt %s in %.2fs",
                    self.config.name or self.kind,
                    exc,
                    attempt + 1,
                    delay,
                )
                self.sleep(delay)
                continue
            latency = (time.monotonic() - started) * 1000
            return ModelResponse(
                **{
                    **asdict(response),
                    "tool_calls": response.tool_calls,
                    "provider": self.config.name or self.kind,
                    "cost": self.config.cost(response.input_tokens, response.output_tokens),
                    "latency_ms": round(latency, 1),
                    "attempts": attempt,
                }
            )

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Return the wait before the next attempt: Retry-After if given, else full jitter."""
        ceiling = min(
            self.config.max_backoff_seconds, self.config.backoff_seconds * 2 ** (attempt - 1)
        )
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.config.max_backoff_seconds)
        return clock.rng().uniform(0, ceiling)

    def _post_once(self, payload: dict, headers: dict, names: dict[str, str]) -> ModelResponse:
        """Make one HTTP attempt and classify what went wrong."""
        timeout = httpx.Timeout(self.config.timeout, connect=min(self.config.timeout, 10.0))
        # httpx's timeout bounds each read, not the reply: a server trickling bytes would keep
        # the call alive forever. The whole attempt must finish within the timeout.
        deadline = time.monotonic() + self.config.timeout
        url = self.url()
        try:
            client = shared_client(f"{self.kind}:{url}")
            with client.stream(
                "POST", url, json=payload, headers=headers, timeout=timeout
            ) as reply:
                received = bytearray()
                for chunk in reply.iter_raw():
                    received += chunk
                    if time.monotonic() > deadline:
                        raise ProviderUnavailable(
                            f"no complete reply within {self.config.timeout:g}s "
                            f"({len(received)} bytes so far)"
                        )
                reply = httpx.Response(  # decoded (Content-Encoding) as any reply
                    reply.status_code,
                    headers=reply.headers,
                    content=bytes(received),
                    request=reply.request,
                )
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(
                f"no reply within {self.config.timeout:g}s ({type(exc).__name__})"
            ) from None
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(
                f"connection failed: {type(exc).__name__}: {self.redact(str(exc))}"
            ) from None
        status = reply.status_code
        if status == 429 or status >= 500:
            error = ProviderUnavailable(
                f"provider answered {status}: {self._excerpt(reply)}", status=status
            )
            error.retry_after = _retry_after(reply)
            raise error
        if status >= 400:
            raise ProviderRefused(
                f"provider refused the request ({status}): {self._excerpt(reply)}", status=status
            )
        try:
            data = reply.json()
        except RecursionError:
            raise MalformedResponse(
                "reply is nested too deeply to read as JSON", status=status
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise MalformedResponse(
                f"reply is not JSON: {self._excerpt(reply)}", status=status
            ) from None
        try:
            return screen_reply(self.parse(data, names))
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise MalformedResponse(
                "reply does not follow the protocol "
                f"({type(exc).__name__}: {limits.clean_text(str(exc), 300)})",
                status=status,
            ) from None

    def _excerpt(self, reply: httpx.Response) -> str:
        """Return the start of a reply's body, with the API key removed if it was echoed."""
        try:
            text = reply.text
        except Exception:  # undecodable body
            text = "<undecodable body>"
        return limits.clean_text(self.redact(text[:300]), 300)

    def redact(self, text: str) -> str:
        """Remove the API key from a text (some providers echo it in their errors)."""
        key = self.config.api_key
        if key and len(key) >= 4:
            text = text.replace(key, "***")
        return text


def _retry_after(reply: httpx.Response) -> float | None:
    """Return the seconds a Retry-After header asks for, when it gives a number."""
    value = reply.headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def decode_arguments(raw: Any) -> tuple[dict[str, Any] | None, str]:
    """Read tool-call arguments (a JSON text or an object); an error instead of a guess."""
    if isinstance(raw, dict):
        return raw, ""
    if raw is None or raw == "":
        return {}, ""
    if not isinstance(raw, str):
        return None, f"arguments are a {type(raw).__name__}, not a JSON object"
    if len(raw) > limits.limit("max_value_chars"):
        return None, f"arguments are over {limits.limit('max_value_chars'):,} characters of JSON"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"arguments are not valid JSON: {exc.msg} at position {exc.pos}"
    except RecursionError:
        return None, f"arguments are nested deeper than {limits.limit('max_depth')} levels"
    except ValueError as exc:  # an integer of thousands of digits
        return None, f"arguments are not readable JSON: {limits.clean_text(str(exc), 200)}"
    if not isinstance(value, dict):
        return None, f"arguments are a JSON {type(value).__name__}, not an object"
    return value, ""


class TokenCountInvalid(ValueError):
    """A reply's token count is not a whole number within the limit."""


def token_count(value: Any, field: str) -> int:
    """Read a token count of a reply's usage (missing is 0); refuse what is not a count."""
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    top = limits.limit("max_token_count")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise TokenCountInvalid(
            f"usage {field} is {limits.clean_text(repr(value), 60)}: "
            f"a token count is a whole number from 0 to {top:,}"
        )
    return value


def screen_reply(response: ModelResponse) -> ModelResponse:
    """Check a reply against the limits before anything keeps it (audit/limits.py).

    Wrong accounting (a token count, the model's name) makes the reply malformed. Text that
    cannot be stored, too many tool calls, or a call whose name or id cannot be used refuse
    the whole reply: it keeps a storable copy of its text and no call. Arguments that cannot
    be stored become that call's error, refused by the enforcement point.
    """
    for counted in ("input_tokens", "output_tokens"):
        try:
            token_count(getattr(response, counted), counted)
        except TokenCountInvalid as exc:
            raise MalformedResponse(str(exc)) from None
    for named in ("model", "stop_reason"):
        value = getattr(response, named)
        most = limits.limit("max_model_name_chars")
        if not isinstance(value, str) or (why := limits.text_problem(value, most)):
            shown = "is not text" if not isinstance(value, str) else why
            raise MalformedResponse(f"the reply's {named.replace('_', ' ')} {shown}")
    if response.refused:
        return response
    refused = _reply_problem(response)
    if refused:
        content = response.content
        return dataclass_replace(
            response,
            content=limits.clean_text(content) if isinstance(content, str) else None,
            tool_calls=(),
            refused=refused,
        )
    calls = []
    for call in response.tool_calls:
        if call.arguments is not None and (why := limits.problem(call.arguments, what="arguments")):
            call = ToolCall(id=call.id, name=call.name, arguments=None, error=why)
        elif call.error:
            call = ToolCall(call.id, call.name, call.arguments, limits.clean_text(call.error, 500))
        calls.append(call)
    return dataclass_replace(response, tool_calls=tuple(calls))


def _reply_problem(response: ModelResponse) -> str:
    """Return why a whole reply is refused ('' when its text, and its calls' names, can be kept)."""
    if response.content is not None:
        if not isinstance(response.content, str):
            return "its content is not text"
        if why := limits.text_problem(response.content):
            return f"its content {why}"
    most = limits.limit("max_tool_calls_per_reply")
    if len(response.tool_calls) > most:
        return (
            f"it proposes {len(response.tool_calls):,} tool calls; at most {most} are accepted "
            "in one reply, so none of them ran"
        )
    for position, call in enumerate(response.tool_calls, start=1):
        if why := limits.text_problem(call.name, limits.limit("max_tool_name_chars")):
            return f"the name of tool call {position} {why}, so no call of this reply ran"
        if why := limits.text_problem(call.id, limits.limit("max_call_id_chars")):
            return f"the id of tool call {position} {why}, so no call of this reply ran"
    return ""


def tool_name_from_wire(name: str, names: dict[str, str]) -> str:
    """Map a name from the wire back to the tool's own name (unknown names stay as they are)."""
    return names.get(name, name)


def check_tool_name(name: str) -> bool:
    """Tell whether a wire tool name is acceptable to the providers."""
    return bool(_WIRE_SAFE.match(name))
