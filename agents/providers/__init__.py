"""Model providers: one interface, three clients (OpenAI-compatible, Anthropic, scripted).

`client_for(config)` returns the client of a ProviderConfig's kind; agents build the config
from their ModelProvider row (agents.models), with the API key decrypted only for the call.
"""

from __future__ import annotations

from agents.providers.anthropic import AnthropicClient
from agents.providers.base import (
    MalformedResponse,
    ModelClient,
    ModelResponse,
    ProviderConfig,
    ProviderError,
    ProviderRefused,
    ProviderUnavailable,
    ToolCall,
    ToolDefinition,
)
from agents.providers.openai import OpenAIClient
from agents.providers.scripted import ScriptedClient

CLIENTS: dict[str, type[ModelClient]] = {
    "openai": OpenAIClient,
    "anthropic": AnthropicClient,
    "scripted": ScriptedClient,
}

__all__ = [
    "CLIENTS",
    "MalformedResponse",
    "ModelClient",
    "ModelResponse",
    "ProviderConfig",
    "ProviderError",
    "ProviderRefused",
    "ProviderUnavailable",
    "ToolCall",
    "ToolDefinition",
    "client_for",
]


def client_for(config: ProviderConfig, *, sleep=None) -> ModelClient:
    """Return a client for a provider configuration."""
    try:
        cls = CLIENTS[config.kind]
    except KeyError:
        raise ProviderRefused(f"unknown provider kind {config.kind!r}") from None
    return cls(config, sleep=sleep)
