"""A real HTTP server on 127.0.0.1, in a thread, that answers like a model provider would.

Tests queue replies (JSON, a status, a broken body, a truncated body, a slow one) or install a
function that answers from the request, and read back every request the server received.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One reply: a status, a body (JSON or raw bytes), headers, a delay, or a cut-off body."""

    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    truncate: bool = False
    raw: bytes | None = None
    trickle: float = 0.0  # seconds between bytes of the body: a server that never quite stalls


@dataclass
class Received:
    """A request the server received."""

    path: str
    headers: dict[str, str]
    body: Any
    at: float
    peer: tuple = ()  # the client's (host, port): one port per TCP connection
    raw: bytes = b""  # the body as received (what a signature covers)


class FakeModelServer:
    """Serves queued replies (or a reply function) and records every request."""

    def __init__(self, answer: Callable[[Received], Reply] | None = None):
        self.replies: deque[Reply] = deque()
        self.requests: list[Received] = []
        self.answer = answer
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # keep test output quiet
                return

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"null")
                except json.JSONDecodeError:
                    body = raw.decode(errors="replace")
                received = Received(
                    self.path,
                    dict(self.headers.items()),
                    body,
                    time.monotonic(),
                    tuple(self.client_address),
                    raw,
                )
                with server.lock:
                    server.requests.append(received)
                    reply = server.replies.popleft() if server.replies else None
                if reply is None:
                    reply = server.answer(received) if server.answer else Reply({}, status=500)
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    if reply.truncate:
                        self.send_header("Connection", "close")
                    self.end_headers()
                    if reply.truncate:
                        self.wfile.write(payload[: len(payload) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    if reply.trickle:
                        for position in range(len(payload)):
                            self.wfile.write(payload[position : position + 1])
                            self.wfile.flush()
                            time.sleep(reply.trickle)
                        return
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """Return the server's base URL."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeModelServer:
        """Start serving in the background."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def push(self, *replies: Reply) -> None:
        """Queue replies, answered in order."""
        with self.lock:
            self.replies.extend(replies)


def openai_reply(
    content: str | None = None,
    tool_calls: list[tuple[str, str, Any]] | None = None,
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
) -> dict:
    """Return a chat-completions reply; tool calls are (id, wire name, arguments JSON text)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}
            for cid, name, arguments in tool_calls
        ]
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "fake-gpt",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def anthropic_reply(
    text: str | None = None,
    tool_uses: list[tuple[str, str, Any]] | None = None,
    input_tokens: int = 12,
    output_tokens: int = 6,
) -> dict:
    """Return a messages reply; tool uses are (id, wire name, input object)."""
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    for tid, name, arguments in tool_uses or []:
        content.append({"type": "tool_use", "id": tid, "name": name, "input": arguments})
    return {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": "fake-claude",
        "content": content,
        "stop_reason": "tool_use" if tool_uses else "end_turn",
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }
