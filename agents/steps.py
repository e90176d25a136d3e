"""The `agent` step type: a bounded, journaled loop of model calls and governed tool calls.

    model call → tool calls through the enforcement point → model call → ... → final result

Every model call, every verdict of the enforcement point and every executed tool call is an
effect journaled by the engine (`ctx.effect(..., key_suffix="call-<n>")`): a step executed
again (a worker killed mid-loop, a resume after an approval) replays the journal in the same
order and makes only the calls that have no journaled result yet. No model call and no side
effect is made twice, and no decision is taken twice.

Between calls the step checks that it still owns its lease (`ctx.lost`) and, right before each
model or tool call, the agent's kill switch. A final answer that does not validate against the
output schema is sent back with the error a bounded number of times, then escalated to a
person; a confident-enough answer completes the step, a less confident one is escalated; a
limit (model calls, tokens, cost, wall time) ends the step with a clear reason.

A coordinator's `delegate` calls become child steps of this step, run in parallel by the
engine under this step's retry policy and timeout; their results go back to the coordinator.
The step type is duck-typed for the engine (see orchestrator/steptypes.py): `agents` never
imports `orchestrator`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from decimal import Decimal
from typing import Any

from django.db.models import Count, Sum
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from agents import conversation, metrics
from agents.actions import enforcement, memory
from agents.actions.enforcement import AgentStopped, CallSite, ToolVerdict
from agents.actions.registry import mark_active
from agents.models import Agent, AgentStatus, ModelCall, Verdict
from agents.providers import ModelResponse, ProviderError, ToolDefinition, client_for
from agents.providers.base import screen_reply
from agents.tools import registered_tools
from audit import clock
from audit import services as audit
from audit.actors import SYSTEM
from governance.actions.approvals import approval_applies, escalate_overdue
from governance.actions.escalations import open_escalation
from governance.models import (
    ApprovalRequest,
    ApprovalStatus,
    Escalation,
    EscalationStatus,
    Resolution,
    Role,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_INVALID = 2
BUSY_RETRY_SECONDS = 1.0


class StepLost(Exception):
    """The step was cancelled or taken back while it ran: stop at once."""


class _Restart(Exception):
    """A person sent the agent's work back: start over with fresh calls."""

    def __init__(self, comment: str):
        super().__init__(comment)
        self.comment = comment


class _Done(Exception):
    """The loop reached an outcome for the engine (complete, wait or fail)."""

    def __init__(self, outcome):
        super().__init__("done")
        self.outcome = outcome


def _schema_errors(validator: Draft202012Validator, value: Any) -> str:
    """Return the schema errors of a result as one readable message ('' when valid)."""
    errors = [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(result)'}: {error.message}"
        for error in sorted(validator.iter_errors(value), key=lambda e: list(e.path))
    ]
    return "; ".join(errors[:10])


class AgentLoop:
    """One execution of an agent step: replays the journal, then continues where it stopped."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.state = dict(ctx.step.input or {}) if isinstance(ctx.step.input, dict) else {}
        self.epoch = 0
        self.counter = 0
        self.usage = {"model_calls": 0, "input_tokens": 0, "output_tokens": 0, "cost": 0.0}
        self.exposed: list[dict[str, Any]] = []  # memory values the conversation holds
        self.last_model_entry: int | None = None  # the audit entry of the last model call

    # --- journal ---------------------------------------------------------------------------

    def next_suffix(self) -> str:
        """Return the key suffix of the next journaled call: call-<n> (per restart epoch)."""
        suffix = f"call-{self.counter}" if self.epoch == 0 else f"call-{self.epoch}.{self.counter}"
        self.counter += 1
        return suffix

    def effect(self, name: str, request: Any, perform) -> Any:
        """Journal one call: a replay returns the recorded result instead of calling again."""
        return self.ctx.effect(name, request, perform, key_suffix=self.next_suffix())

    def key_of(self, suffix: str) -> str:
        """Return the full journal key of a suffix."""
        return f"{self.ctx.idempotency_key}:{suffix}"

    # --- guards ----------------------------------------------------------------------------

    def guard(self) -> None:
        """Before a new call: still our step, the agent still active, within its wall time."""
        if self.ctx.lost:
            raise StepLost("the step was cancelled or taken back while it ran")
        status, reason = (
            Agent.objects.filter(pk=self.agent.pk).values_list("status", "status_reason").get()
        )
        if status != AgentStatus.ACTIVE:
            raise AgentStopped(f"agent {self.agent.slug} is {status}: {reason}")
        started = dt.datetime.fromisoformat(self.started_at)
        waited = float(self.state.get("waited_seconds", 0.0))
        elapsed = (clock.now() - started).total_seconds() - waited
        if elapsed > self.agent.max_wall_seconds:
            raise _Done(
                self.ctx.fail(
                    "WallTimeExceeded",
                    f"agent {self.agent.slug} worked {elapsed:.0f}s, over its limit of "
                    f"{self.agent.max_wall_seconds}s",
                    retryable=False,
                )
            )

    def run_usage(self, up_to: int | None = None) -> dict[str, Any]:
        """Return the agent's usage in the whole run (every step), from its ModelCall rows.

        `up_to` counts only the calls journaled up to that row, so a replay decides as the
        first execution did.
        """
        calls = ModelCall.objects.filter(run_id=self.ctx.run.pk, agent_id=self.agent.pk)
        if up_to is not None:
            calls = calls.filter(pk__lte=up_to)
        totals = calls.aggregate(
            model_calls=Count("pk"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost=Sum("cost"),
        )
        return {
            "model_calls": totals["model_calls"],
            "input_tokens": totals["input_tokens"] or 0,
            "output_tokens": totals["output_tokens"] or 0,
            "cost": float(totals["cost"] or 0),
        }

    def check_calls(self) -> None:
        """Before a new model call: fail when the agent has made its limit of calls in the run."""
        made = self.run_usage()["model_calls"]
        if made >= self.agent.max_steps:
            raise _Done(
                self.ctx.fail(
                    "StepLimitExceeded",
                    f"agent {self.agent.slug} made {made} model calls in run {self.ctx.run.pk} "
                    f"without a final result; its limit is {self.agent.max_steps} per run",
                    retryable=False,
                    usage=self.usage,
                    run_usage=self.run_usage(),
                )
            )

    def check_budget(self, model_call_id: int | None) -> None:
        """Fail the step when the agent's tokens or cost in the run went over its limits."""
        used = self.run_usage(up_to=model_call_id) if model_call_id else self.usage
        tokens = used["input_tokens"] + used["output_tokens"]
        if tokens > self.agent.max_tokens:
            raise _Done(
                self.ctx.fail(
                    "TokenLimitExceeded",
                    f"agent {self.agent.slug} used {tokens} tokens in run {self.ctx.run.pk}, "
                    f"over its limit of {self.agent.max_tokens} per run",
                    retryable=False,
                    usage=self.usage,
                    run_usage=used,
                )
            )
        if Decimal(str(used["cost"])) > self.agent.max_cost:
            raise _Done(
                self.ctx.fail(
                    "CostLimitExceeded",
                    f"agent {self.agent.slug} cost {used['cost']:.4f} in run {self.ctx.run.pk}, "
                    f"over its limit of {self.agent.max_cost} per run",
                    retryable=False,
                    usage=self.usage,
                    run_usage=used,
                )
            )

    # --- the assignment --------------------------------------------------------------------

    def assignment(self) -> tuple[str, Any, dict, int, str]:
        """Return (agent slug, task, output schema, invalid answers allowed, escalation role)."""
        spec = self.ctx.spec
        if self.ctx.is_child:
            item = self.ctx.step.item or {}
            delegate = Agent.objects.filter(slug=item.get("agent")).first()
            schema = delegate.output_schema if delegate is not None else {}
            return (
                item.get("agent", ""),
                item.get("task"),
                schema or {},
                spec.get("max_invalid_answers", DEFAULT_MAX_INVALID),
                spec.get("escalate_to", ""),
            )
        slug = self.ctx.render(spec["agent"])
        task = self.ctx.render(spec.get("task", self.ctx.template_context().get("input")))
        schema = spec.get("output_schema")
        if schema is None:
            agent = Agent.objects.filter(slug=slug).first()
            schema = agent.output_schema if agent is not None else {}
        return (
            slug,
            task,
            schema or {},
            spec.get("max_invalid_answers", DEFAULT_MAX_INVALID),
            spec.get("escalate_to", ""),
        )

    def offered_tools(self) -> list[ToolDefinition]:
        """Return the tools the model is offered: the agent's enabled, registered tools."""
        specs = registered_tools()
        offered = []
        for row in self.agent.tools.filter(enabled=True).order_by("name"):
            spec = specs.get(row.name)
            if spec is None:
                continue
            description = row.description or spec.description
            if row.name == "delegate":
                names = ", ".join(
                    f"{d.slug} ({d.mandate[:80]})" for d in self.agent.delegates.order_by("slug")
                )
                description = f"{description} Agents you may delegate to: {names or 'none'}."
            offered.append(ToolDefinition(row.name, description, spec.schema))
        return offered

    # --- the loop --------------------------------------------------------------------------

    def run(self):
        """Run the loop to an outcome for the engine."""
        slug, task, schema, max_invalid, escalate_to = self.assignment()
        self.agent = Agent.objects.select_related("provider", "user", "owner").filter(slug=slug)
        self.agent = self.agent.first()
        if self.agent is None:
            return self.ctx.fail("UnknownAgent", f"no agent has the slug {slug!r}", False)
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            return self.ctx.fail("InvalidOutputSchema", exc.message, retryable=False)
        self.validator = Draft202012Validator(schema)
        self.schema, self.max_invalid, self.escalate_to = schema, max_invalid, escalate_to
        self.task = task
        self.ctx.record_input({**self.state, "agent": slug, "task": task})
        try:
            started = self.effect("agent.start", {"agent": slug}, self._start)
            self.started_at = started["at"]
            comment = ""
            while True:
                try:
                    return self.converse(comment)
                except _Restart as restart:
                    self.epoch += 1
                    self.counter = 0
                    comment = restart.comment
        except _Done as done:
            return done.outcome
        except AgentStopped as exc:
            return self.ctx.fail("AgentStopped", str(exc), retryable=False)
        except StepLost as exc:
            return self.ctx.fail("StepLost", str(exc), retryable=False)

    def _start(self, context) -> dict[str, Any]:
        """Open the run's namespace to this agent (a control-layer rule); note the time."""
        if self.ctx.run.pk is not None:
            memory.ensure_run_namespace(self.ctx.run.pk, self.agent, actor=SYSTEM)
        return {"at": clock.now().isoformat()}

    def converse(self, comment: str):
        """One conversation from the task to an outcome."""
        agent = self.agent
        messages = [
            conversation.system_message(
                name=agent.name,
                mandate=agent.mandate,
                instructions=agent.instructions,
                output_schema=self.schema,
            ),
            conversation.task_message(self.task),
        ]
        if comment:
            messages.append(
                {"role": "user", "content": f"A person sent your previous work back: {comment}"}
            )
        tools = self.offered_tools()
        invalid = 0
        self.exposed = []
        while True:
            response = self.model_call(messages, tools)
            messages.append(conversation.assistant_message(response))
            refused = response.get("refused", "")
            if response["tool_calls"]:  # a refused reply has none
                self.handle_calls(response["tool_calls"], messages)
                continue
            if refused:
                result, confidence, error = None, None, f"your reply was refused: {refused}"
            else:
                result, confidence, error = conversation.parse_final(response["content"])
            if not error:
                error = _schema_errors(self.validator, result)
            if error:
                invalid += 1
                if invalid > self.max_invalid:
                    return self.escalate_result(
                        "invalid_result",
                        f"{agent.name} gave {invalid} answers that do not validate; last: {error}",
                        {"answer": response["content"], "error": error},
                    )
                messages.append(
                    conversation.refused_message(refused)
                    if refused
                    else conversation.feedback_message(error)
                )
                continue
            if confidence < agent.confidence_threshold:
                return self.escalate_result(
                    "low_confidence",
                    f"{agent.name} is {confidence:.0%} confident, below its threshold of "
                    f"{agent.confidence_threshold:.0%}",
                    {"result": result, "confidence": confidence},
                )
            return self.ctx.complete(self.output(result, confidence))

    def output(self, result: Any, confidence: float | None, **extra) -> dict[str, Any]:
        """Return the step's output."""
        return {
            "result": result,
            "confidence": confidence,
            "agent": self.agent.slug,
            "scripted": self.agent.is_scripted,
            "usage": self.usage,
            **extra,
        }

    # --- model calls -----------------------------------------------------------------------

    def model_call(self, messages: list[dict], tools: list[ToolDefinition]) -> dict[str, Any]:
        """Make (or replay) one model call, then account for it."""
        request = {
            "agent": self.agent.slug,
            "model": self.agent.model,
            "messages": len(messages),
            "tools": [tool.name for tool in tools],
        }
        response = self.effect(
            f"model:{self.agent.slug}",
            request,
            lambda context: self._call_model(context, messages, tools),
        )
        self.last_model_entry = response.get("audit_entry")
        self.usage["model_calls"] += 1
        self.usage["input_tokens"] += response["input_tokens"]
        self.usage["output_tokens"] += response["output_tokens"]
        self.usage["cost"] = round(self.usage["cost"] + response["cost"], 8)
        self.check_budget(response.get("model_call"))
        return response

    def _call_model(self, context, messages, tools) -> dict[str, Any]:
        """Call the provider, record the call, and audit prompt and response."""
        self.guard()
        self.check_calls()  # only before a new call: a replay never refuses what was made
        agent = self.agent
        client = client_for(agent.provider.config(agent.model, agent.script))
        try:
            response: ModelResponse = client.complete(
                messages, tools, idempotency_key=context.idempotency_key
            )
        except ProviderError as exc:
            metrics.observe_failure(agent.provider.kind, exc.attempts)
            raise
        metrics.observe_reply(agent.provider.kind, response.latency_ms, response.attempts)
        response = screen_reply(response)  # every client's reply, before anything keeps it
        row = ModelCall.objects.create(
            agent=agent,
            agent_slug=agent.slug,
            provider=response.provider,
            model=response.model,
            key=context.idempotency_key,
            run_id=self.ctx.run.pk,
            step_id=self.ctx.step.step_id,
            input_tokens=response.input_tokens,
            output_tokens=response.output_tokens,
            cost=Decimal(str(response.cost)),
            latency_ms=response.latency_ms,
            attempts=response.attempts,
            tool_calls=len(response.tool_calls),
            created_at=clock.now(),
        )
        entry = audit.record(
            action="agents.model.called",
            actor=agent.user,
            actor_kind="agent",
            target=agent,
            run_id=self.ctx.run.pk,
            step_id=self.ctx.step.step_id,
            decision={"scripted": agent.is_scripted},
            body={
                "provider": response.provider,
                "model": response.model,
                "prompt": messages,
                "tools": [tool.name for tool in tools],
                "response": response.as_json(),
                "input_tokens": response.input_tokens,
                "output_tokens": response.output_tokens,
                "cost": response.cost,
                "latency_ms": response.latency_ms,
                "key": context.idempotency_key,
            },
        )
        # The prompt holds every memory value read or written so far in this conversation:
        # the purge of any of them erases this body.
        memory.note_audited_copies(entry.pk, self.exposed, run_id=self.ctx.run.pk)
        mark_active(agent.pk)
        return {**response.as_json(), "audit_entry": entry.pk, "model_call": row.pk}

    # --- tool calls ------------------------------------------------------------------------

    def handle_calls(self, calls: list[dict], messages: list[dict]) -> None:
        """Decide every proposed call, run the admitted ones, delegate, and report back."""
        delegations = []
        for call in calls:
            verdict, key = self.decide(call)
            outcome = self.gate(call, verdict)
            if outcome is None and call["name"] == "delegate":
                delegations.append(call)
                continue
            if outcome is None:
                outcome = self.for_model(call, self.execute(call, verdict, key))
            messages.append(conversation.tool_message(call, outcome))
        if delegations:
            for call, outcome in zip(delegations, self.delegate(delegations), strict=True):
                messages.append(conversation.tool_message(call, outcome))

    def decide(self, call: dict) -> tuple[ToolVerdict, str]:
        """Take (or replay) the enforcement point's verdict on one proposed call."""
        suffix = self.next_suffix()
        site = CallSite(
            key=self.key_of(suffix),
            run_id=self.ctx.run.pk,
            step_run_id=self.ctx.step.pk,
            step_id=self.ctx.step.step_id,
            run_initiator_id=self.ctx.run.started_by_id,
            attempt=self.ctx.attempt,
            workflow_id=self.ctx.run.workflow_id,
            workflow=self.ctx.run.workflow.slug,
        )

        def perform(context):
            if self.ctx.lost:
                raise StepLost("the step was cancelled or taken back while it ran")
            return enforcement.decide_tool_call(
                self.agent.pk,
                call["name"],
                call.get("arguments"),
                site,
                argument_error=call.get("error", ""),
            ).as_json()

        arguments = enforcement.recordable(call["name"], call.get("arguments"))
        request = {"tool": call["name"], "arguments": arguments, "decision": True}
        data = self.ctx.effect(f"decide:{call['name']}", request, perform, key_suffix=suffix)
        return ToolVerdict.from_json(data), site.key

    def gate(self, call: dict, verdict: ToolVerdict) -> dict[str, Any] | None:
        """Return what the model is told instead of running the call, or None to run it.

        A pending approval or escalation makes the step wait (it resumes on the decision).
        An approval admits the call only for exactly the arguments it was granted for.
        """
        if verdict.verdict == Verdict.DENY:
            return enforcement.refusal(verdict)
        if verdict.verdict == Verdict.ALLOW:
            return None
        if verdict.verdict == Verdict.APPROVAL:
            ids = verdict.required_approvals
            requests = sorted(
                ApprovalRequest.objects.filter(pk__in=ids), key=lambda r: ids.index(r.pk)
            )
            if len(requests) != len(ids):
                return enforcement.refusal(verdict, "an approval this call needs does not exist")
            # A person's refusal is reported before the cancellations it caused.
            decided = sorted(requests, key=lambda r: r.status == ApprovalStatus.CANCELLED)
            for request in decided:
                if request.status == ApprovalStatus.PENDING:
                    continue
                bound = verdict.arguments  # what the approval was asked for: the canonical form
                if bound is None:
                    bound = enforcement.recordable(call["name"], call.get("arguments"))
                if not approval_applies(request, bound):
                    return enforcement.refusal(
                        verdict,
                        f"approval request #{request.pk} was {request.get_status_display().lower()}"
                        if request.status != ApprovalStatus.APPROVED
                        else f"approval request #{request.pk} covers other arguments",
                    )
            for request in requests:
                if request.status == ApprovalStatus.PENDING:
                    raise _Done(
                        self.wait_for(
                            "approval",
                            request.pk,
                            request.signal_name,
                            seconds=max((request.due_at - clock.now()).total_seconds(), 0.0),
                        )
                    )
            return None
        escalation = Escalation.objects.get(pk=verdict.escalation)
        if escalation.status == EscalationStatus.OPEN:
            raise _Done(self.wait_for("escalation", escalation.pk, escalation.signal_name))
        if escalation.resolution == Resolution.TAKE_OVER:
            return {
                "ok": True,
                "result": escalation.result,
                "supplied_by": escalation.resolved_by_name,
            }
        if escalation.resolution == Resolution.STOP:
            raise _Done(self.stopped(escalation))
        return enforcement.refusal(
            verdict,
            f"a person ({escalation.resolved_by_name or 'nobody'}) did not let this call run: "
            f"{escalation.comment or escalation.get_status_display()}",
        )

    def execute(self, call: dict, verdict: ToolVerdict, decision_key: str) -> dict[str, Any]:
        """Run (or replay) an admitted call; the effect's key is the tool's idempotency key."""

        def perform(context):
            self.guard()
            outcome = enforcement.execute_tool_call(
                self.agent.pk,
                call["name"],
                call["arguments"],
                verdict,
                context,
                invocation_key=decision_key,
                workflow_id=self.ctx.run.workflow_id,
                workflow=self.ctx.run.workflow.slug,
            )
            written = _memory_reference(call, outcome) if call["name"] == "memory.write" else None
            if written is not None and self.last_model_entry is not None:
                # The model call that proposed this write holds the value in its response.
                memory.note_audited_copies(self.last_model_entry, [written], run_id=self.ctx.run.pk)
            return outcome

        request = enforcement.recordable(call["name"], call["arguments"])
        return self.effect(call["name"], request, perform)

    def for_model(self, call: dict, outcome: dict[str, Any]) -> dict[str, Any]:
        """Return an outcome as the model sees it: a memory read gets its held value back."""
        reference = _memory_reference(call, outcome)
        if reference is None:
            return outcome
        self.exposed.append(reference)
        result = {k: v for k, v in outcome["result"].items() if k != "memory"}
        if call["name"] == "memory.read":
            result["value"] = memory.held_value(reference)
        else:
            result.pop("value", None)  # the model wrote it; no need to echo it back
        return {**outcome, "result": result}

    # --- delegation ------------------------------------------------------------------------

    def delegate(self, calls: list[dict]) -> list[dict[str, Any]]:
        """Run allowed delegations as child steps in parallel; return each one's outcome."""
        group = f"delegate-{self.next_suffix()}"
        items = [
            {
                "agent": call["arguments"]["agent"],
                "task": call["arguments"]["task"],
                "delegated_by": self.agent.slug,
                "call": call["id"],
            }
            for call in calls
        ]
        self.guard()
        signal = self.ctx.spawn_children(group, items)
        results = self.ctx.child_results(group)
        if results is None:
            raise _Done(self.wait_for("children", group, signal))
        outcomes = []
        for item, result in zip(items, results, strict=True):
            if result["status"] == "succeeded":
                output = result["output"] or {}
                outcomes.append(
                    {
                        "ok": True,
                        "agent": item["agent"],
                        "result": output.get("result"),
                        "confidence": output.get("confidence"),
                    }
                )
            else:
                error = result["error"] or {}
                outcomes.append(
                    {
                        "ok": False,
                        "agent": item["agent"],
                        "status": result["status"],
                        "error": error.get("type", "Error"),
                        "message": error.get("message", ""),
                        "attempts": result["attempt"],
                    }
                )
        return outcomes

    # --- people ----------------------------------------------------------------------------

    def escalate_result(self, reason: str, summary: str, context: dict):
        """Hand the result to a person: open (once) an escalation and wait for its resolution."""

        def perform(tool_context):
            role = Role.objects.filter(name=self.escalate_to).first() if self.escalate_to else None
            escalation = open_escalation(
                reason=reason,
                summary=summary,
                context={**context, "agent": self.agent.slug, "task": self.task},
                role=role,
                run_id=self.ctx.run.pk,
                step_run_id=self.ctx.step.pk,
                step_id=self.ctx.step.step_id,
                raised_by=self.agent.user,
            )
            return {"escalation": escalation.pk}

        data = self.effect("escalate", {"reason": reason}, perform)
        escalation = Escalation.objects.get(pk=data["escalation"])
        if escalation.status == EscalationStatus.OPEN:
            return self.wait_for("escalation", escalation.pk, escalation.signal_name)
        if escalation.status == EscalationStatus.CANCELLED:
            return self.ctx.fail("EscalationCancelled", escalation.comment, retryable=False)
        if escalation.resolution == Resolution.TAKE_OVER:
            return self.ctx.complete(
                self.output(escalation.result, None, supplied_by=escalation.resolved_by_name)
            )
        if escalation.resolution == Resolution.RETRY:
            raise _Restart(escalation.comment or "try again")
        return self.stopped(escalation)

    def stopped(self, escalation: Escalation):
        """Fail the step because a person stopped it."""
        return self.ctx.fail(
            "StoppedByPerson",
            f"{escalation.resolved_by_name} stopped it: {escalation.comment}",
            retryable=False,
            escalation=escalation.pk,
        )

    def wait_for(self, kind: str, ref: Any, signal: str, seconds: float | None = None):
        """Wait durably for a decision, a person, or the children; remember what for."""
        self.state.update(
            {"waiting": {"kind": kind, "ref": ref}, "wait_started": clock.now().isoformat()}
        )
        self.ctx.record_input({**self.state, "agent": self.agent.slug, "task": self.task})
        return self.ctx.wait(signal=signal, seconds=seconds)


class AgentStep:
    """The `agent` step type: an agent works on a task until it gives a valid final result.

    Fields: `agent` (slug, templated), `task` (templated JSON; default: the run input),
    `output_schema` (default: the agent's), `max_invalid_answers` (default 2),
    `escalate_to` (the role that gets escalations; default governance's).
    """

    name = "agent"
    fields: dict[str, Any] = {
        "agent": {"type": "string", "minLength": 1},
        "task": {},
        "output_schema": {"type": "object"},
        "max_invalid_answers": {"type": "integer", "minimum": 0, "maximum": 10},
        "escalate_to": {"type": "string", "minLength": 1},
    }
    required = ("agent",)
    transactional = False

    def check(self, step: dict[str, Any]) -> list[tuple[str, str]]:
        """Refuse an unknown agent (when named literally) and an invalid output schema."""
        problems = []
        slug = step["agent"]
        if "{{" not in slug and not Agent.objects.filter(slug=slug).exists():
            problems.append(("agent", f"no agent has the slug {slug!r}"))
        if "output_schema" in step:
            try:
                Draft202012Validator.check_schema(step["output_schema"])
            except SchemaError as exc:
                problems.append(("output_schema", f"not a valid JSON Schema: {exc.message}"))
        return problems

    def execute(self, ctx):
        """Run the agent loop (replaying what the journal already holds)."""
        return AgentLoop(ctx).run()

    def on_wake(self, ctx, reason: str, payload: Any):
        """A decision, a person or the children answered (or an SLA passed): continue."""
        state = dict(ctx.step.input or {})
        waiting = state.pop("waiting", None) or {}
        started = state.pop("wait_started", None)
        if started:
            waited = (clock.now() - dt.datetime.fromisoformat(started)).total_seconds()
            state["waited_seconds"] = round(float(state.get("waited_seconds", 0.0)) + waited, 3)
        if reason != "signal" and waiting.get("kind") == "approval":
            request = escalate_overdue(
                waiting["ref"], actor=SYSTEM, now=ctx.now, announce_to_run=False
            )
            if request is None:  # someone is deciding right now: look again shortly
                return ctx.wait(signal=f"approval:{waiting['ref']}", seconds=BUSY_RETRY_SECONDS)
            if request.status == ApprovalStatus.PENDING:
                state.update({"waiting": waiting, "wait_started": clock.now().isoformat()})
                ctx.record_input(state)
                seconds = max((request.due_at - ctx.now).total_seconds(), 0.0)
                return ctx.wait(signal=request.signal_name, seconds=seconds)
        ctx.record_input(state)
        log.info("agent step %s resumes after %s (%s)", ctx.step, reason, waiting.get("kind"))
        return ctx.resume()


def _memory_reference(call: dict, outcome: dict[str, Any]) -> dict[str, Any] | None:
    """Return the memory reference in a memory tool's successful outcome (None otherwise)."""
    if call["name"] not in ("memory.read", "memory.write") or not outcome.get("ok"):
        return None
    result = outcome.get("result")
    return result.get("memory") if isinstance(result, dict) else None


def describe_outcome(outcome: dict[str, Any]) -> str:
    """Return a short text of a tool outcome, for logs."""
    return json.dumps(outcome, sort_keys=True, default=str)[:200]
