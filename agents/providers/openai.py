"""An OpenAI-compatible chat-completions client with tool calling.

Works with OpenAI and with servers that speak its protocol (vLLM, Ollama, LM Studio):
POST {base_url}/chat/completions with `model`, `messages` and `tools`; the reply's first choice
holds the message, and `usage` the token counts.
"""

from __future__ import annotations

import json
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


class OpenAIClient(HTTPModelClient):
    """Chat completions with function tools."""

    kind = "openai"

    def url(self) -> str:
        """Return the chat-completions endpoint under the configured base URL."""
        base = (self.config.base_url or "https://api.openai.com/v1").rstrip("/")
        return f"{base}/chat/completions"

    def headers(self) -> dict[str, str]:
        """Authenticate with a bearer token when a key is configured (local servers need none)."""
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        return headers

    def body(self, messages: list[dict[str, Any]], tools: list[ToolDefinition]) -> dict:
        """Translate the neutral conversation into chat-completions messages."""
        wire = []
        for message in messages:
            role = message["role"]
            if role == "assistant":
                entry: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
                if message.get("tool_calls"):
                    entry["tool_calls"] = [
                        {
                            "id": call["id"],
                            "type": "function",
                            "function": {
                                "name": wire_name(call["name"]),
                                "arguments": json.dumps(call.get("arguments") or {}),
                            },
                        }
                        for call in message["tool_calls"]
                    ]
                wire.append(entry)
            elif role == "tool":
                wire.append(
                    {
                        "role": "tool",
                        "tool_call_id": message["tool_call_id"],
                        "content": message["content"],
                    }
                )
            else:
                wire.append({"role": role, "content": message["content"]})
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": wire,
            "max_tokens": self.config.max_output_tokens,
        }
        if tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": wire_name(tool.name),
                        "description": tool.description,
                        "parameters": tool.parameters,
                    },
                }
                for tool in tools
            ]
        return body

    def parse(self, data: Any, names: dict[str, str]) -> ModelResponse:
        """Read the first choice's message and the usage."""
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise ValueError("message content is not text")
        calls = []
        for index, call in enumerate(message.get("tool_calls") or []):
            function = call["function"]
            arguments, error = decode_arguments(function.get("arguments"))
            calls.append(
                ToolCall(
                    id=str(call.get("id") or f"call_{index}"),
                    name=tool_name_from_wire(str(function["name"]), names),
                    arguments=arguments,
                    error=error,
                )
            )
        usage = data.get("usage") or {}
        return ModelResponse(
            content=content,
            tool_calls=tuple(calls),
            model=str(data.get("model") or self.config.model),
            input_tokens=token_count(usage.get("prompt_tokens"), "prompt_tokens"),
            output_tokens=token_count(usage.get("completion_tokens"), "completion_tokens"),
            stop_reason=str(choice.get("finish_reason") or ""),
        )
