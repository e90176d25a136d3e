"""A websocket test client for ASGI applications (channels.testing's, without its daphne import).

`channels.testing` imports daphne (for its live-server test case) when the package loads, and
Steward serves with uvicorn: this is the small part of it the tests use, on asgiref's
ApplicationCommunicator.
"""

from __future__ import annotations

import json
from unittest import mock
from urllib.parse import unquote, urlparse

from asgiref.testing import ApplicationCommunicator


def _keep_connections():
    """Tests keep their database connections (channels.db would close them between events)."""


class WebsocketCommunicator(ApplicationCommunicator):
    """Drive one websocket of an ASGI application: connect, send and receive frames, close."""

    def __init__(self, application, path: str, headers=None):
        parsed = urlparse(path)
        scope = {
            "type": "websocket",
            "path": unquote(parsed.path),
            "query_string": parsed.query.encode(),
            "headers": headers or [],
            "subprotocols": [],
        }
        super().__init__(application, scope)

    async def send_input(self, message):
        with mock.patch("channels.db.close_old_connections", _keep_connections):
            return await super().send_input(message)

    async def receive_output(self, timeout=1):
        with mock.patch("channels.db.close_old_connections", _keep_connections):
            return await super().receive_output(timeout)

    async def connect(self, timeout=1) -> tuple[bool, object]:
        """Open the socket: (True, subprotocol) when accepted, (False, close code) when refused."""
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        assert response["type"] == "websocket.accept", response
        return True, response.get("subprotocol")

    async def send_json_to(self, data) -> None:
        """Send one JSON text frame."""
        await self.send_input({"type": "websocket.receive", "text": json.dumps(data)})

    async def receive_from(self, timeout=1) -> str:
        """Return the next text frame (fails if the socket closes instead)."""
        response = await self.receive_output(timeout)
        assert response["type"] == "websocket.send", response
        return response["text"]

    async def receive_json_from(self, timeout=1):
        """Return the next text frame, decoded."""
        return json.loads(await self.receive_from(timeout))

    async def disconnect(self, code=1000, timeout=1) -> None:
        """Close the socket from the client's side."""
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)
