"""The conversation an agent step has with its model, in the providers' neutral format.

The model is told its mandate, its instructions and the answer protocol; the task arrives as
JSON in the first user message; tool outcomes come back as JSON; a final answer is a JSON object
`{"result": ..., "confidence": 0..1}` without tool calls. The scripted provider reads the same
messages a real model would, so the demo and the tests go through this exact path.
"""

from __future__ import annotations

import json
from typing import Any

from audit import limits

TASK_PREFIX = "Task (JSON):\n"
FEEDBACK_PREFIX = "Your final answer was not accepted: "
REFUSED_PREFIX = "Your last reply was refused by the control layer: "
ANSWER_AGAIN = 'Answer again with {"result": ..., "confidence": ...}.'


def system_message(
    *, name: str, mandate: str, instructions: str, output_schema: dict | None
) -> dict[str, Any]:
    """Return the system message: who the agent is, what it is for, and how to answer."""
    schema = json.dumps(output_schema or {}, sort_keys=True)
    text = (
        f"You are {name}, an agent working inside a governed workflow.\n"
        f"Mandate: {mandate}\n\n"
        f"{instructions}\n\n"
        "Use the tools offered when you need them; a tool call may be refused by the control "
        "layer, and then you get the reason instead of a result. Do not claim permissions or "
        "approvals: only the control layer grants them.\n"
        'When you are done, answer with only a JSON object {"result": <your result>, '
        '"confidence": <a number from 0 to 1>} and no tool calls. '
        f"The result must validate against this JSON Schema: {schema}"
    )
    return {"role": "system", "content": text}


def task_message(task: Any) -> dict[str, Any]:
    """Return the user message that states the task."""
    return {"role": "user", "content": TASK_PREFIX + json.dumps(task, sort_keys=True)}


def feedback_message(error: str) -> dict[str, Any]:
    """Return the user message that sends an invalid final answer back with its error."""
    return {
        "role": "user",
        "content": f"{FEEDBACK_PREFIX}{error}\n{ANSWER_AGAIN}",
    }


def refused_message(reason: str) -> dict[str, Any]:
    """Return the user message that tells the model why its whole reply was refused."""
    return {
        "role": "user",
        "content": f"{REFUSED_PREFIX}{reason}.\n"
        "Nothing in it was run: reply again, with tool calls or with your final answer.",
    }


def assistant_message(response: dict[str, Any]) -> dict[str, Any]:
    """Return the assistant message of a (journaled) model response."""
    return {
        "role": "assistant",
        "content": response.get("content"),
        "tool_calls": [
            {"id": call["id"], "name": call["name"], "arguments": call.get("arguments") or {}}
            for call in response.get("tool_calls") or []
        ],
    }


def tool_message(call: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    """Return the message that gives a tool call's outcome (result or refusal) to the model."""
    return {
        "role": "tool",
        "tool_call_id": call["id"],
        "name": call["name"],
        "content": json.dumps(outcome, sort_keys=True, default=str),
    }


def parse_final(content: str | None) -> tuple[Any, float | None, str]:
    """Read a final answer: (result, confidence, error); the error is '' when it is readable."""
    if not content or not content.strip():
        return None, None, "the answer is empty"
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text[text.find("\n") + 1 :] if "\n" in text else text
    start = text.find("{")
    if start < 0:
        return None, None, "the answer is not a JSON object"
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        return None, None, f"the answer is not valid JSON: {exc.msg}"
    except RecursionError:
        return None, None, f"the answer is nested deeper than {limits.limit('max_depth')} levels"
    except ValueError as exc:  # an integer of thousands of digits
        return None, None, f"the answer is not readable JSON: {limits.clean_text(str(exc), 200)}"
    if not isinstance(value, dict) or "result" not in value:
        return None, None, 'the answer must be an object with "result" and "confidence"'
    if why := limits.problem(value["result"], what="result"):
        return None, None, f"the answer cannot be stored: {why}"
    confidence = value.get("confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        return None, None, '"confidence" must be a number from 0 to 1'
    if not 0 <= confidence <= 1:
        return None, None, '"confidence" must be between 0 and 1'
    return value["result"], float(confidence), ""


def read_task(messages: list[dict[str, Any]]) -> Any:
    """Return the task stated in the first user message (None when there is none)."""
    for message in messages:
        if message["role"] == "user" and str(message.get("content", "")).startswith(TASK_PREFIX):
            try:
                return json.loads(message["content"][len(TASK_PREFIX) :])
            except json.JSONDecodeError:
                return None
    return None


def read_outcome(message: dict[str, Any]) -> dict[str, Any]:
    """Return the outcome a tool message carries (its JSON, or the text as `raw`)."""
    try:
        value = json.loads(message.get("content") or "null")
    except json.JSONDecodeError:
        return {"raw": message.get("content")}
    return value if isinstance(value, dict) else {"raw": value}
