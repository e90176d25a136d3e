"""An Anthropic messages client: POST {base_url}/v1/messages with `system`, `messages`, `tools`.

Tool results go back as `tool_result` blocks of a user message; consecutive results are sent
together in one message, as the protocol requires.
"""

from __future__ import annotations

from typing import Any

from agents.providers.base import (
    HTTPModelClient,
    ModelResponse,
    ToolCall,
    ToolDefinition,
    decode_arguments,
    token_count,
    tool_name_from_wire,
    wire_name,
)

API_VERSION = "2023-06-01"


class AnthropicClient(HTTPModelClient):
    """The messages API with tool use."""

    kind = "anthropic"

    def url(self) -> str:
        """Return the messages endpoint under the configured base URL."""
        base = (self.config.base_url or "https://api.anthropic.com").rstrip("/")
        return f"{base}/v1/messages"

    def headers(self) -> dict[str, str]:
        """Authenticate with the x-api-key header and pin the API version."""
        headers = {"Content-Type": "application/json", "anthropic-version": API_VERSION}
        if self.config.api_key:
            headers["x-api-key"] = self.config.api_key
        return headers

    def body(self, messages: list[dict[str, Any]], tools: list[ToolDefinition]) -> dict:
        """Translate the neutral conversation: system apart, tool results as user blocks."""
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        wire: list[dict[str, Any]] = []
        for message in messages:
            role = message["role"]
            if role == "system":
                continue
            if role == "assistant":
                blocks: list[dict[str, Any]] = []
                if message.get("content"):
                    blocks.append({"type": "text", "text": message["content"]})
                for call in message.get("tool_calls") or []:
                    blocks.append(
                        {
                            "type": "tool_use",
                            "id": call["id"],
                            "name": wire_name(call["name"]),
                            "input": call.get("arguments") or {},
                        }
                    )
                wire.append({"role": "assistant", "content": blocks})
            elif role == "tool":
                block = {
                    "type": "tool_result",
                    "tool_use_id": message["tool_call_id"],
                    "content": message["content"],
                }
                previous = wire[-1] if wire else None
                if (
                    previous is not None
                    and previous["role"] == "user"
                    and isinstance(previous["content"], list)
                    and all(b.get("type") == "tool_result" for b in previous["content"])
                ):
                    previous["content"].append(block)
                else:
                    wire.append({"role": "user", "content": [block]})
            else:
                wire.append({"role": "user", "content": message["content"]})
        body: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": self.config.max_output_tokens,
            "messages": wire,
        }
        if system:
            body["system"] = system
        if tools:
            body["tools"] = [
                {
                    "name": wire_name(tool.name),
                    "description": tool.description,
                    "input_schema": tool.parameters,
                }
                for tool in tools
            ]
        return body

    def parse(self, data: Any, names: dict[str, str]) -> ModelResponse:
        """Read the text and tool_use blocks and the usage."""
        if data.get("type") == "error":
            raise ValueError(f"error object in a 200 reply: {data.get('error')}")
        texts = []
        calls = []
        for index, block in enumerate(data["content"]):
            kind = block["type"]
            if kind == "text":
                texts.append(str(block["text"]))
            elif kind == "tool_use":
                arguments, error = decode_arguments(block.get("input"))
                calls.append(
                    ToolCall(
                        id=str(block.get("id") or f"toolu_{index}"),
                        name=tool_name_from_wire(str(block["name"]), names),
                        arguments=arguments,
                        error=error,
                    )
                )
        usage = data.get("usage") or {}
        return ModelResponse(
            content="".join(texts) if texts else None,
            tool_calls=tuple(calls),
            model=str(data.get("model") or self.config.model),
            input_tokens=token_count(usage.get("input_tokens"), "input_tokens"),
            output_tokens=token_count(usage.get("output_tokens"), "output_tokens"),
            stop_reason=str(data.get("stop_reason") or ""),
        )
