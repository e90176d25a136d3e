"""The offline `scripted` provider: behaviour declared in the agent's configuration.

It is not a language model. It reads the conversation as a real model would (the task, the tool
outcomes, the feedback on an invalid answer) and answers with the first rule that matches:

    {"rules": [
        {"when": "turn == 1", "tool_calls": [{"tool": "incident.check_health",
                                               "arguments": {"hosts": "{{ input.hosts }}"}}]},
        {"when": "results[0].ok", "final": {"severity": "high"}, "confidence": 0.9},
        {"text": "I could not decide."}
    ]}

`when` is an expression and the values are templates of the sandboxed language workflows use,
over `input` (the task), `turn` (1 for the first call), `results` (the outcomes of the last tool
calls, in order), `history` (all outcomes so far), `feedback` (why the last answer was refused,
or ""), `invalid` (how many answers were refused) and `comments` (what people added to the
conversation, e.g. when they sent the work back). A rule answers with `tool_calls`, a
`final` result with its `confidence` (default 1), or raw `text`. Tokens are counted roughly
(four characters a token) so limits apply to scripted agents too; the cost is zero.
"""

from __future__ import annotations

import json
import time
from typing import Any

from agents.conversation import (
    FEEDBACK_PREFIX,
    REFUSED_PREFIX,
    TASK_PREFIX,
    read_outcome,
    read_task,
)
from agents.providers.base import ModelClient, ModelResponse, ToolCall
from governance import expressions

RULE_SCHEMA = {
    "type": "object",
    "required": ["rules"],
    "additionalProperties": False,
    "properties": {
        "rules": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "when": {"type": "string", "minLength": 1},
                    "tool_calls": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["tool"],
                            "additionalProperties": False,
                            "properties": {
                                "tool": {"type": "string", "minLength": 1},
                                "arguments": {},
                            },
                        },
                    },
                    "final": {},
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                    "text": {"type": "string"},
                },
            },
        }
    },
}


def conversation_facts(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Return what a rule may look at, read from the messages alone."""
    turn = 1 + sum(1 for m in messages if m["role"] == "assistant")
    history = [read_outcome(m) for m in messages if m["role"] == "tool"]
    results: list[dict[str, Any]] = []
    for message in reversed(messages):
        if message["role"] != "tool":
            break
        results.insert(0, read_outcome(message))
    prefixes = (FEEDBACK_PREFIX, REFUSED_PREFIX)  # an answer or a whole reply sent back
    feedbacks = [
        next(m["content"][len(p) :] for p in prefixes if m["content"].startswith(p))
        for m in messages
        if m["role"] == "user" and str(m.get("content", "")).startswith(prefixes)
    ]
    comments = [
        str(m.get("content", ""))
        for m in messages[1:]
        if m["role"] == "user"
        and not str(m.get("content", "")).startswith((*prefixes, TASK_PREFIX))
    ]
    last = messages[-1] if messages else {}
    feedback = ""
    if last.get("role") == "user" and str(last.get("content", "")).startswith(prefixes):
        feedback = feedbacks[-1]
    return {
        "input": read_task(messages),
        "turn": turn,
        "results": results,
        "history": history,
        "feedback": feedback,
        "invalid": len(feedbacks),
        "comments": comments,
    }


class ScriptedClient(ModelClient):
    """Answers from the agent's declared rules; no network, no model."""

    kind = "scripted"

    def complete(self, messages, tools, *, idempotency_key=""):
        """Answer with the first rule whose condition holds for the conversation."""
        started = time.monotonic()
        facts = conversation_facts(messages)
        rules = (self.config.script or {}).get("rules", [])
        answer = None
        for index, rule in enumerate(rules):
            condition = rule.get("when")
            if condition:
                try:
                    if not expressions.evaluate(condition, facts):
                        continue
                except expressions.ExpressionError:
                    continue  # a rule that cannot be read does not match
            answer = self._answer(rule, facts, index)
            break
        if answer is None:
            answer = ("no scripted rule matched this conversation", ())
        content, calls = answer
        prompt_chars = sum(len(json.dumps(m, default=str)) for m in messages)
        reply_chars = len(content or "") + sum(len(json.dumps(c.as_json())) for c in calls)
        return ModelResponse(
            content=content,
            tool_calls=calls,
            model=self.config.model or "scripted",
            provider=self.config.name or "scripted",
            input_tokens=max(1, prompt_chars // 4),
            output_tokens=max(1, reply_chars // 4),
            cost=0.0,
            latency_ms=round((time.monotonic() - started) * 1000, 3),
            attempts=1,
            stop_reason="tool_use" if calls else "end_turn",
        )

    def _answer(self, rule: dict, facts: dict, index: int) -> tuple[str | None, tuple]:
        """Render a rule's answer: tool calls, a final result, or raw text."""
        turn = facts["turn"]
        if rule.get("tool_calls"):
            calls = []
            for position, call in enumerate(rule["tool_calls"]):
                arguments = expressions.render(call.get("arguments", {}), facts)
                error = "" if isinstance(arguments, dict) else "arguments are not a JSON object"
                calls.append(
                    ToolCall(
                        id=f"scripted-{turn}-{position}",
                        name=str(call["tool"]),
                        arguments=arguments if isinstance(arguments, dict) else None,
                        error=error,
                    )
                )
            return None, tuple(calls)
        if "final" in rule:
            result = expressions.render(rule["final"], facts)
            confidence = rule.get("confidence", 1.0)
            return json.dumps({"result": result, "confidence": confidence}), ()
        return str(expressions.render(rule.get("text", ""), facts)), ()
