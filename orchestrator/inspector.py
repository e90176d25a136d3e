"""What the run inspector reads: a run's graph, timeline, waits, steps, events and conversation.

Reads only; every write goes through orchestrator.services. Every queryset starts from
restrict() (a run's parts follow the run; an agent's calls follow the agent; approvals and
escalations their own rules), so a page shows only what its viewer may see.

A large run stays cheap: the graph reads one small row per definition step plus one aggregate
of the foreach items and delegated children, and draws at most GRAPH_NODES of them; steps and
events are read a page at a time; the timeline reads the events of the steps on the page only.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Q
from django.urls import reverse

from agents.models import ModelCall, ToolInvocation
from audit import clock
from governance import inbox
from governance.models import ApprovalRequest, Escalation
from governance.permissions import can
from orchestrator.engine import CHILD_SEPARATOR
from orchestrator.models import (
    NO_ITEM,
    EventKind,
    RunEvent,
    RunStatus,
    StepRun,
    StepStatus,
    WorkflowRun,
)

STEPS_PAGE = 50
EVENTS_PAGE = 50
ITEMS_PAGE = 50
TIMELINE_EVENTS = 2000  # the most events the timeline of one steps page reads
WAITS_SHOWN = 20

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 170, 54, 56, 18, 12


def _steps(user):
    """Return the step rows `user` may see (those of the runs they may see)."""
    return StepRun.objects.restrict(user, "view")


def _events(user):
    """Return the run events `user` may see."""
    return RunEvent.objects.restrict(user, "view")


def pretty(value: Any) -> str:
    """Render JSON for reading: sorted keys, indented (the template escapes it)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def root_step_id(step_id: str) -> str:
    """Return the definition step a row belongs to (a delegated child's root step)."""
    return step_id.split(CHILD_SEPARATOR, 1)[0]


# --- the graph ------------------------------------------------------------------------------------


@dataclass
class Node:
    """One step of the definition, placed, with its row's state and its items' counts; or, when
    `hidden`, the steps of a layer (or of the layers after the last drawn) folded into one."""

    id: str
    type: str
    depends_on: list[str]
    layer: int = 0
    row: int = 0
    status: str = "pending"
    step_pk: int | None = None
    attempt: int = 0
    folded: Counter = field(default_factory=Counter)
    hidden: int = 0
    url: str = ""

    @property
    def x(self) -> int:
        return PAD + self.layer * (NODE_W + GAP_X)

    @property
    def y(self) -> int:
        return PAD + self.row * (NODE_H + GAP_Y)

    @property
    def folded_total(self) -> int:
        return sum(self.folded.values())

    @property
    def folded_done(self) -> int:
        return self.folded.get(StepStatus.SUCCEEDED, 0) + self.folded.get(StepStatus.SKIPPED, 0)

    @property
    def folded_failed(self) -> int:
        return self.folded.get(StepStatus.FAILED, 0)

    @property
    def folded_summary(self) -> str:
        """Say how many folded steps are in each state ("3 failed, 40 succeeded")."""
        return ", ".join(f"{n} {status}" for status, n in sorted(self.folded.items()))


def _layers(steps: list[dict]) -> dict[str, int]:
    """Return each step's layer: the length of its longest path from a root."""
    parents = {step["id"]: list(step.get("depends_on", [])) for step in steps}
    layer: dict[str, int] = {}
    for step_id in parents:  # definitions are acyclic (validated on publish)
        stack = [step_id]
        while stack:
            node = stack[-1]
            pending = [p for p in parents.get(node, []) if p not in layer and p in parents]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            layer[node] = 1 + max((layer[p] for p in parents[node] if p in layer), default=-1)
    return layer


# What a large definition's graph draws: so many steps a layer, so many in all; the rest of a
# layer, and the layers past the last drawn, are folded into one node each (the steps list
# pages through them all). The steps that need a look are drawn first.
GRAPH_PER_LAYER = 12
GRAPH_NODES = 120
_DRAWN_FIRST = {
    StepStatus.FAILED: 0,
    StepStatus.RUNNING: 1,
    StepStatus.WAITING: 2,
    StepStatus.READY: 3,
}
_FOLDED_STATE = [StepStatus.FAILED, StepStatus.RUNNING, StepStatus.WAITING, StepStatus.READY]


def _fold(layer: int, members: list[Node]) -> Node:
    """Return the node that stands for `members` (steps not drawn), coloured by the worst."""
    counts = Counter(node.status for node in members)
    status = next((state for state in _FOLDED_STATE if counts.get(state)), None)
    if status is None:
        status = StepStatus.SUCCEEDED if counts.get(StepStatus.SUCCEEDED) else "pending"
    return Node(
        f"+{layer}", "more", [], layer=layer, status=status, folded=counts, hidden=len(members)
    )


def _drawn(nodes: dict[str, Node]) -> tuple[list[Node], dict[str, Node]]:
    """Choose and place what the graph draws; return the drawn nodes and, for every step, the
    node that shows it (its own or its fold)."""
    by_layer: dict[int, list[Node]] = defaultdict(list)
    for node in nodes.values():
        by_layer[node.layer].append(node)
    drawn: list[Node] = []
    shown_as: dict[str, Node] = {}
    budget = GRAPH_NODES
    layers = sorted(by_layer)
    for position, layer in enumerate(layers):
        members = by_layer[layer]
        if budget <= 0:  # past the last drawn layer: the rest is one node
            rest = [node for later in layers[position:] for node in by_layer[later]]
            fold = _fold(layer, rest)
            drawn.append(fold)
            shown_as.update(dict.fromkeys((node.id for node in rest), fold))
            break
        keep = min(GRAPH_PER_LAYER, budget)
        ranked = sorted(members, key=lambda node: _DRAWN_FIRST.get(node.status, 9))
        chosen = {node.id for node in ranked[:keep]}
        row = 0
        for node in members:  # in the definition's order
            if node.id in chosen:
                node.row, row = row, row + 1
                drawn.append(node)
                shown_as[node.id] = node
        budget -= len(chosen)
        hidden = [node for node in members if node.id not in chosen]
        if hidden:
            fold = _fold(layer, hidden)
            fold.row = row
            drawn.append(fold)
            shown_as.update(dict.fromkeys((node.id for node in hidden), fold))
    return drawn, shown_as


def graph(user, run: WorkflowRun) -> dict[str, Any]:
    """Return the run's definition laid out in layers, each step with its state (two queries);
    a large one drawn in part, the rest folded."""
    steps = (run.version.definition or {}).get("steps", [])
    layers = _layers(steps)
    nodes: dict[str, Node] = {}
    for step in steps:
        node = Node(step["id"], step.get("type", ""), list(step.get("depends_on", [])))
        node.layer = layers.get(node.id, 0)
        nodes[node.id] = node
    main = (
        _steps(user)
        .filter(run=run, item_index=NO_ITEM)
        .exclude(step_id__contains=CHILD_SEPARATOR)
        .values_list("step_id", "status", "pk", "attempt")
    )
    step_urls = reverse("runs:steps", args=[run.pk])
    for step_id, status, pk, attempt in main:
        node = nodes.get(step_id)
        if node is not None:
            node.status, node.step_pk, node.attempt = status, pk, attempt
            node.url = f"{step_urls}{pk}/"
    folded = (
        _steps(user)
        .filter(run=run)
        .filter(~Q(item_index=NO_ITEM) | Q(step_id__contains=CHILD_SEPARATOR))
        .values_list("step_id", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for step_id, status, n in folded:
        node = nodes.get(root_step_id(step_id))
        if node is not None:
            node.folded[status] += n
    drawn, shown_as = _drawn(nodes)
    edges, seen = [], set()
    for node in nodes.values():
        child = shown_as.get(node.id)
        for parent_id in node.depends_on:
            parent = shown_as.get(parent_id)
            if parent is None or child is None or parent is child:
                continue
            if (parent.id, child.id) in seen:
                continue
            seen.add((parent.id, child.id))
            edges.append(
                {
                    "x1": parent.x + NODE_W,
                    "y1": parent.y + NODE_H // 2,
                    "x2": child.x,
                    "y2": child.y + NODE_H // 2,
                    "mid": (parent.x + NODE_W + child.x) // 2,
                    "done": parent.status == StepStatus.SUCCEEDED,
                }
            )
    per_layer = Counter(node.layer for node in drawn)
    width = PAD * 2 + (max(per_layer, default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max(per_layer.values(), default=1) * (NODE_H + GAP_Y) - GAP_Y
    return {
        "nodes": drawn,
        "edges": edges,
        "width": width,
        "height": height,
        "node_w": NODE_W,
        "node_h": NODE_H,
        "steps": len(nodes),
        "hidden": sum(node.hidden for node in drawn),
    }


# --- steps, items and events, a page at a time --------------------------------------------------


def main_steps(user, run: WorkflowRun):
    """Return the run's own step rows (no foreach items, no delegated children), in order."""
    return (
        _steps(user)
        .filter(run=run, item_index=NO_ITEM)
        .exclude(step_id__contains=CHILD_SEPARATOR)
        .defer("input", "output", "item")
        .order_by("id")
    )


def folded_rows(user, step: StepRun):
    """Return a step's foreach items and delegated children, in order."""
    if step.item_index != NO_ITEM or CHILD_SEPARATOR in step.step_id:
        return StepRun.objects.none()
    return (
        _steps(user)
        .filter(run_id=step.run_id)
        .filter(
            Q(step_id=step.step_id, item_index__gt=NO_ITEM)
            | Q(step_id__startswith=f"{step.step_id}{CHILD_SEPARATOR}")
        )
        .defer("input", "output")
        .order_by("id")
    )


def page_after(queryset, after: str | None, size: int):
    """Return one page of rows by id after the cursor `after`, and the next cursor (or None)."""
    if after and after.isdigit():
        queryset = queryset.filter(pk__gt=int(after))
    rows = list(queryset[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    return rows, (str(rows[-1].pk) if more and rows else None)


EVENT_KINDS = EventKind.choices


def events(user, run: WorkflowRun, *, kind: str = "", step: str = ""):
    """Return the run's events filtered by kind and step (a step id matches its items too)."""
    queryset = _events(user).filter(run=run).order_by("id")
    if kind:
        queryset = queryset.filter(kind=kind)
    if step:
        queryset = queryset.filter(
            Q(step_id=step) | Q(step_id__startswith=f"{step}{CHILD_SEPARATOR}")
        )
    return queryset


# --- the timeline -------------------------------------------------------------------------------

# Which segment an event opens (None: it ends the open one).
_OPENS = {
    EventKind.STEP_STARTED: "running",
    EventKind.RETRY_SCHEDULED: "backoff",
    EventKind.WAITING: "waiting",
}
_ENDS = {
    EventKind.STEP_SUCCEEDED,
    EventKind.STEP_FAILED,
    EventKind.STEP_SKIPPED,
    EventKind.STEP_CANCELLED,
    EventKind.TIMER_FIRED,
    EventKind.WAIT_TIMED_OUT,
    EventKind.SIGNAL_RECEIVED,
    EventKind.LEASE_EXPIRED,
    EventKind.STEP_RETRIED,
}


def timeline(user, run: WorkflowRun, steps: list[StepRun]) -> dict[str, Any]:
    """Return the Gantt of a page of steps: attempts, backoffs and waits on one time axis."""
    ids = [step.pk for step in steps]
    rows = (
        _events(user)
        .filter(run=run, step_run_id__in=ids, kind__in=[*_OPENS, *_ENDS])
        .order_by("id")
        .values_list("step_run_id", "kind", "attempt", "created_at")[:TIMELINE_EVENTS]
    )
    start = run.created_at
    end = run.finished_at or clock.now()
    segments: dict[int, list[dict]] = defaultdict(list)
    open_segment: dict[int, dict] = {}
    for step_pk, kind, attempt, at in rows:
        current = open_segment.pop(step_pk, None)
        if current is not None:
            current["end"] = at
        if kind in _OPENS:
            segment = {"kind": _OPENS[kind], "start": at, "end": None, "attempt": attempt}
            segments[step_pk].append(segment)
            open_segment[step_pk] = segment
    for segment in open_segment.values():
        segment["end"] = end
        segment["open"] = True
    span = max((end - start).total_seconds(), 0.001)
    lanes = []
    for step in steps:
        bars = []
        for segment in segments.get(step.pk, []):
            seg_end = segment["end"] or end
            left = max((segment["start"] - start).total_seconds(), 0) / span * 100
            width = max((seg_end - segment["start"]).total_seconds(), 0) / span * 100
            bars.append(
                {
                    **segment,
                    "end": seg_end,
                    "seconds": round((seg_end - segment["start"]).total_seconds(), 3),
                    "left": round(min(left, 100), 3),
                    "width": round(max(min(width, 100 - left), 0.3), 3),
                }
            )
        lanes.append({"step": step, "bars": bars})
    return {"start": start, "end": end, "seconds": round(span, 3), "lanes": lanes}


# --- why it waits -------------------------------------------------------------------------------


def _approval_wait(user, request_id: int) -> dict[str, Any]:
    """Say who may decide the approval a step waits for, who is excluded and why, and when it
    escalates."""
    request = (
        ApprovalRequest.objects.restrict(user, "view")
        .select_related("role", "approval_rule")
        .filter(pk=request_id)
        .first()
    )
    if request is None:
        return {"kind": "approval", "request_id": request_id, "visible": False}
    return {
        "kind": "approval",
        "request_id": request_id,
        "visible": True,
        "request": request,
        "words": inbox.action_in_words(request),
        "deciders": inbox.approval_deciders(user, request) if not request.is_final else None,
        "next_hop": inbox.next_hop(request),
    }


def _escalation_wait(user, escalation_id: int) -> dict[str, Any]:
    """Say who may resolve the escalation a step waits for, and who is excluded and why."""
    escalation = (
        Escalation.objects.restrict(user, "view")
        .select_related("role")
        .filter(pk=escalation_id)
        .first()
    )
    if escalation is None:
        return {"kind": "escalation", "escalation_id": escalation_id, "visible": False}
    return {
        "kind": "escalation",
        "escalation_id": escalation_id,
        "visible": True,
        "escalation": escalation,
        "resolvers": inbox.escalation_resolvers(user, escalation),
    }


def _reserved_id(signal: str) -> int | None:
    """Return the id a reserved signal (`approval:<id>`, `escalation:<id>`) names."""
    tail = signal.split(":", 1)[1] if ":" in signal else ""
    return int(tail) if tail.isdigit() else None


def why_waiting(user, step: StepRun, now: dt.datetime | None = None) -> dict[str, Any] | None:
    """Say what a step waits for, computed from its state (None: it waits for nothing)."""
    now = now or clock.now()
    signal = step.wait_signal or ""
    error = step.error if isinstance(step.error, dict) else {}
    if step.status == StepStatus.WAITING:
        if signal.startswith("approval:") and _reserved_id(signal) is not None:
            return {**_approval_wait(user, _reserved_id(signal)), "step": step}
        if signal.startswith("escalation:") and _reserved_id(signal) is not None:
            return {**_escalation_wait(user, _reserved_id(signal)), "step": step}
        awaiting = error.get("awaiting")
        if not signal and isinstance(awaiting, dict) and awaiting.get("escalation"):
            wait = _escalation_wait(user, int(awaiting["escalation"]))
            return {**wait, "step": step, "parked": True, "error": error}
        if signal.startswith("children:"):
            counts = Counter(folded_rows(user, step).values_list("status", flat=True))
            open_count = sum(n for s, n in counts.items() if s not in _FINISHED)
            return {"kind": "children", "step": step, "open": open_count, "counts": dict(counts)}
        if signal:
            return {"kind": "signal", "step": step, "signal": signal, "timeout_at": step.wake_at}
        if step.wake_at is not None:
            return {"kind": "timer", "step": step, "fires_at": step.wake_at}
        return {"kind": "unknown", "step": step}
    if step.status == StepStatus.READY and step.attempt and step.ready_at and step.ready_at > now:
        return {
            "kind": "retry",
            "step": step,
            "attempt": step.attempt + 1,
            "ready_at": step.ready_at,
            "error": error,
        }
    return None


_FINISHED = {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}


def waits(user, run: WorkflowRun) -> list[dict[str, Any]]:
    """Return what the run waits for: each waiting (or backing off) step's reason."""
    if run.is_finished:
        return []
    now = clock.now()
    rows = (
        _steps(user)
        .filter(run=run)
        .filter(
            Q(status=StepStatus.WAITING)
            | Q(status=StepStatus.READY, attempt__gt=0, ready_at__gt=now)
        )
        .defer("input", "output")
        .order_by("id")[:WAITS_SHOWN]
    )
    found = [why_waiting(user, row, now) for row in rows]
    return [wait for wait in found if wait is not None]


def paused_by(user, run: WorkflowRun) -> RunEvent | None:
    """Return the event that paused a paused run."""
    if run.status != RunStatus.PAUSED:
        return None
    return _events(user).filter(run=run, kind=EventKind.RUN_PAUSED).order_by("-id").first()


# --- actions ------------------------------------------------------------------------------------


def actions(user, run: WorkflowRun) -> dict[str, bool]:
    """Return which actions the page offers: those the services would let `user` take."""
    allowed = can(user, "change", run)
    return {
        "change": allowed,
        "cancel": allowed and not run.is_finished,
        "pause": allowed and run.status == RunStatus.RUNNING,
        "resume": allowed and run.status == RunStatus.PAUSED,
        "signal": allowed and not run.is_finished,
        "retry": allowed,
    }


# --- one step -----------------------------------------------------------------------------------


def conversation(user, step: StepRun) -> list[dict[str, Any]]:
    """Return an agent step's model calls, tool calls (with their policy decision) and the
    approvals they asked for, in order, as `user` may see them."""
    prefix = f"{step.idempotency_key}:"
    calls = ModelCall.objects.restrict(user, "view").filter(
        run_id=step.run_id, key__startswith=prefix
    )
    tools = ToolInvocation.objects.restrict(user, "view").filter(
        run_id=step.run_id, key__startswith=prefix
    )
    turns = [{"kind": "model", "at": c.created_at, "call": c} for c in calls]
    turns += [{"kind": "tool", "at": t.created_at, "call": t} for t in tools]
    requested = {t["call"].approval_request for t in turns if t["kind"] == "tool"} - {None}
    if requested:
        visible = ApprovalRequest.objects.restrict(user, "view").filter(pk__in=requested)
        by_id = {request.pk: request for request in visible}
        for turn in turns:
            if turn["kind"] == "tool" and turn["call"].approval_request:
                turn["approval"] = by_id.get(turn["call"].approval_request)
    for turn in turns:
        if turn["kind"] == "tool":
            turn["arguments"] = pretty(turn["call"].arguments)
            turn["outcome"] = pretty(turn["call"].outcome) if turn["call"].outcome else ""
    turns.sort(key=lambda turn: (turn["at"], turn["kind"] != "model", turn["call"].pk))
    return turns


def memory_entries(user, step: StepRun) -> list:
    """Return the memory reads and writes of a step from the audit trail (for its readers)."""
    from audit.models import AuditEntry

    return list(
        AuditEntry.objects.restrict(user, "view")
        .filter(
            run_id=str(step.run_id),
            step_id=step.step_id[:64],
            action__in=["agents.memory.read", "agents.memory.written"],
        )
        .order_by("id")[:200]
    )


def step_page(user, step: StepRun) -> dict[str, Any]:
    """Return what a step's panel shows: its input, output, error, wait, items and conversation."""
    is_agent = step.step_type in ("agent", "coordinator") or step.step_type.startswith("agent")
    return {
        "step": step,
        "input": pretty(step.input) if step.input is not None else "",
        "output": pretty(step.output) if step.output is not None else "",
        "error": pretty(step.error) if step.error else "",
        "item": pretty(step.item) if step.item is not None else "",
        "wait": why_waiting(user, step),
        "conversation": conversation(user, step) if is_agent else [],
        "memory": memory_entries(user, step) if is_agent else [],
        "is_agent": is_agent,
    }
