"""The agents API: agents (and their kill switch), tools, tool invocations and model calls.

Views stay thin: every list is `restrict(user, "view")`, every object `get_for` (404 for what
the caller may not see, audited), and every write the registry service the admin calls.
"""

from __future__ import annotations

import json

from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import services
from agents.api.serializers import (
    AgentSerializer,
    ModelCallDetailSerializer,
    ModelCallSerializer,
    StatusChangeSerializer,
    ToolInvocationDetailSerializer,
    ToolInvocationSerializer,
    ToolSerializer,
)
from agents.filters import AgentFilter, ModelCallFilter, ToolFilter, ToolInvocationFilter
from agents.models import Agent, AgentStatus, ModelCall, Tool, ToolInvocation
from audit.api.pagination import CursorPagination
from audit.api.schema import problems
from audit.evidence import canonical_json
from audit.models import AuditEntry
from governance import services as governance
from governance.api.errors import valid
from governance.models import Role
from governance.permissions import restricted


class BySlug(CursorPagination):
    """Agents in slug order."""

    ordering = ("slug", "id")


class ByName(CursorPagination):
    """Tools in name order."""

    ordering = ("name", "id")


class NewestFirst(CursorPagination):
    """Records of what agents did, newest first."""

    ordering = ("-created_at", "-id")


# --- agents -------------------------------------------------------------------------------------


def _agent_rows(user):
    """Return the agents `user` may see, with the tools and roles they may see of each."""
    return (
        Agent.objects.restrict(user, "view")
        .select_related("provider")
        .prefetch_related(
            Prefetch("tools", queryset=restricted(user, Tool), to_attr="visible_tools"),
            Prefetch("roles", queryset=restricted(user, Role), to_attr="visible_roles"),
        )
    )


class AgentListView(ListAPIView):
    """The agents the caller may see."""

    serializer_class = AgentSerializer
    filterset_class = AgentFilter
    pagination_class = BySlug

    def get_queryset(self):
        """Every agent the caller may see."""
        return _agent_rows(self.request.user)

    @extend_schema(
        summary="List agents",
        responses={200: AgentSerializer(many=True), **problems(400)},
    )
    def get(self, request, *args, **kwargs):
        """List the agents."""
        return super().get(request, *args, **kwargs)


class AgentDetailView(APIView):
    """One agent."""

    @extend_schema(summary="Read an agent", responses={200: AgentSerializer, **problems(404)})
    def get(self, request, pk: int):
        """Return the agent if the caller may see it (404, audited, otherwise)."""
        agent = governance.get_for(request.user, _agent_rows(request.user), pk)
        return Response(AgentSerializer(agent).data)


class AgentStatusView(APIView):
    """The kill switch: set an agent's status through the registry service, with a reason."""

    status: str = AgentStatus.ACTIVE

    def post(self, request, pk: int):
        """Change the status (403 without change on the agent, audited); answer the agent."""
        agent = governance.get_for(request.user, Agent, pk)
        body = valid(StatusChangeSerializer, request.data)
        services.set_status(agent, self.status, actor=request.user, reason=body["reason"])
        return Response(
            AgentSerializer(governance.get_for(request.user, _agent_rows(request.user), pk)).data
        )


def _status_view(status: str, summary: str, description: str):
    """Make the view of one kill-switch operation, described for the schema."""
    schema = extend_schema(
        summary=summary,
        description=description,
        request=StatusChangeSerializer,
        responses={200: AgentSerializer, **problems(403, 404, 422)},
    )
    view = type(
        f"Agent{status.title()}View",
        (AgentStatusView,),
        {"status": status, "__doc__": f"{summary}.", "post": schema(AgentStatusView.post)},
    )
    return view.as_view()


suspend = _status_view(
    AgentStatus.SUSPENDED,
    "Suspend an agent",
    "The agent's running steps stop at their next call; it starts nothing until reactivated.",
)
quarantine = _status_view(
    AgentStatus.QUARANTINED,
    "Quarantine an agent (kill switch)",
    "Like suspending, marked as a security stop: the agent is under investigation.",
)
reactivate = _status_view(
    AgentStatus.ACTIVE, "Reactivate an agent", "Let a suspended or quarantined agent act again."
)


# --- tools --------------------------------------------------------------------------------------


def _tool_rows(user):
    """Return the tools `user` may see."""
    return Tool.objects.restrict(user, "view").select_related("approval_rule")


class ToolListView(ListAPIView):
    """The governed tools the caller may see."""

    serializer_class = ToolSerializer
    filterset_class = ToolFilter
    pagination_class = ByName

    def get_queryset(self):
        """Every tool the caller may see."""
        return _tool_rows(self.request.user)

    @extend_schema(
        summary="List tools", responses={200: ToolSerializer(many=True), **problems(400)}
    )
    def get(self, request, *args, **kwargs):
        """List the tools."""
        return super().get(request, *args, **kwargs)


class ToolDetailView(APIView):
    """One governed tool."""

    @extend_schema(summary="Read a tool", responses={200: ToolSerializer, **problems(404)})
    def get(self, request, pk: int):
        """Return the tool if the caller may see it (404, audited, otherwise)."""
        return Response(
            ToolSerializer(governance.get_for(request.user, _tool_rows(request.user), pk)).data
        )


# --- tool invocations ---------------------------------------------------------------------------


class ToolInvocationListView(ListAPIView):
    """The tool invocations of the agents the caller may see, each with its policy decision."""

    serializer_class = ToolInvocationSerializer
    filterset_class = ToolInvocationFilter
    pagination_class = NewestFirst

    def get_queryset(self):
        """Every invocation the caller may see (they follow their agent)."""
        return ToolInvocation.objects.restrict(self.request.user, "view")

    @extend_schema(
        summary="List tool invocations",
        responses={200: ToolInvocationSerializer(many=True), **problems(400)},
    )
    def get(self, request, *args, **kwargs):
        """List the invocations."""
        return super().get(request, *args, **kwargs)


class ToolInvocationDetailView(APIView):
    """One tool invocation: its arguments, the policy decision and the outcome."""

    @extend_schema(
        summary="Read a tool invocation",
        responses={200: ToolInvocationDetailSerializer, **problems(404)},
    )
    def get(self, request, pk: int):
        """Return the invocation if the caller may see it (404, audited, otherwise)."""
        invocation = governance.get_for(request.user, ToolInvocation, pk)
        return Response(ToolInvocationDetailSerializer(invocation).data)


# --- model calls --------------------------------------------------------------------------------


class ModelCallListView(ListAPIView):
    """The model calls of the agents the caller may see (never their prompts)."""

    serializer_class = ModelCallSerializer
    filterset_class = ModelCallFilter
    pagination_class = NewestFirst

    def get_queryset(self):
        """Every model call the caller may see (they follow their agent)."""
        return ModelCall.objects.restrict(self.request.user, "view")

    @extend_schema(
        summary="List model calls",
        responses={200: ModelCallSerializer(many=True), **problems(400)},
    )
    def get(self, request, *args, **kwargs):
        """List the model calls."""
        return super().get(request, *args, **kwargs)


def _exchange(user, call: ModelCall) -> dict:
    """Return a call's prompt and response from its audit entry, if `user` may read the trail.

    The prompt may hold anything the agent read (memory, tickets), so it is shown by the audit
    trail's own rule (`audit.view_auditentry`), not by who may see the agent.
    """
    hidden = {"visible": False, "audit_entry": None, "erased": False}
    hidden.update(prompt=None, tools=None, response=None)
    key = canonical_json(call.key).decode()
    entry = (
        AuditEntry.objects.restrict(user, "view")
        .filter(
            action="agents.model.called",
            run_id=call.run_id,
            target_type="agents.agent",
            target_id=str(call.agent_id or ""),
            body_row__content__contains=f'"key":{key}',
        )
        .select_related("body_row")
        .order_by("pk")
        .first()
    )
    if entry is None:
        return hidden
    body = entry.body_row.content
    if body is None:
        return {**hidden, "visible": True, "audit_entry": entry.pk, "erased": True}
    data = json.loads(body)
    return {
        "visible": True,
        "audit_entry": entry.pk,
        "erased": False,
        "prompt": data.get("prompt"),
        "tools": data.get("tools"),
        "response": data.get("response"),
    }


class ModelCallDetailView(APIView):
    """One model call, with its prompt and response for who may read the audit trail."""

    @extend_schema(
        summary="Read a model call",
        description="`exchange` holds the prompt and response only for a caller who may read "
        "the audit trail (`audit.view_auditentry`), as the audit report shows them.",
        responses={200: ModelCallDetailSerializer, **problems(404)},
    )
    def get(self, request, pk: int):
        """Return the call if the caller may see it (404, audited, otherwise)."""
        call = governance.get_for(request.user, ModelCall, pk)
        context = {"exchange": _exchange(request.user, call)}
        return Response(ModelCallDetailSerializer(call, context=context).data)
