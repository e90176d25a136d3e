"""What the agents API shows of agents, tools, tool invocations and model calls."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.models import Agent, ModelCall, Tool, ToolInvocation


class LimitsSerializer(serializers.Serializer):
    """An agent's budget per run and its confidence threshold."""

    max_steps = serializers.IntegerField()
    max_tokens = serializers.IntegerField()
    max_cost = serializers.DecimalField(max_digits=10, decimal_places=4)
    max_wall_seconds = serializers.IntegerField()
    confidence_threshold = serializers.FloatField()


class AgentSerializer(serializers.ModelSerializer):
    """An agent: mandate, accountable owner, model, the tools and roles the caller may see."""

    owner = serializers.CharField(source="owner_name")
    provider = serializers.CharField(source="provider.slug")
    scripted = serializers.BooleanField(source="is_scripted")
    tools = serializers.SerializerMethodField()
    roles = serializers.SerializerMethodField()
    limits = LimitsSerializer(source="*")

    class Meta:
        model = Agent
        fields = [
            "id",
            "slug",
            "name",
            "mandate",
            "status",
            "status_reason",
            "owner",
            "provider",
            "model",
            "scripted",
            "tools",
            "roles",
            "limits",
            "last_active_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_tools(self, obj) -> list[str]:
        """Return the names of the agent's tools the caller may see (prefetched by the view)."""
        return [tool.name for tool in obj.visible_tools]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_roles(self, obj) -> list[str]:
        """Return the names of the agent's roles the caller may see (prefetched by the view)."""
        return [role.name for role in obj.visible_roles]


class StatusChangeSerializer(serializers.Serializer):
    """Why an agent is suspended, quarantined or reactivated (kept in its history and audit)."""

    reason = serializers.CharField(max_length=400)


class ToolSerializer(serializers.ModelSerializer):
    """A governed tool: enabled or not, its risk, rate limit and approval rule."""

    approval_rule = serializers.CharField(
        source="approval_rule.slug", allow_null=True, default=None
    )

    class Meta:
        model = Tool
        fields = [
            "id",
            "name",
            "description",
            "side_effects",
            "risk",
            "enabled",
            "rate_limit",
            "rate_window_seconds",
            "approval_rule",
            "config",
            "registered",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class PolicyDecisionSerializer(serializers.Serializer):
    """What the control layer decided about a proposed call, and on what grounds."""

    decision = serializers.CharField(source="verdict")
    stage = serializers.CharField(help_text="The check that decided: status, mandate, policy, ...")
    reason = serializers.CharField()
    policy = serializers.CharField()
    policy_version = serializers.IntegerField(allow_null=True)
    policy_rule = serializers.IntegerField(allow_null=True)
    digest = serializers.CharField(source="arguments_digest")
    approval_request = serializers.IntegerField(allow_null=True)
    escalation = serializers.IntegerField(allow_null=True)


class ToolInvocationSerializer(serializers.ModelSerializer):
    """One proposed tool call and the policy decision on it."""

    agent = serializers.CharField(source="agent_slug")
    decision = PolicyDecisionSerializer(source="*")
    run = serializers.IntegerField(source="run_id", allow_null=True)
    step = serializers.CharField(source="step_id")

    class Meta:
        model = ToolInvocation
        fields = [
            "id",
            "agent",
            "caller_kind",
            "caller_name",
            "tool",
            "decision",
            "run",
            "step",
            "key",
            "created_at",
            "executed_at",
        ]
        read_only_fields = fields


class ToolInvocationDetailSerializer(ToolInvocationSerializer):
    """One invocation in full: the arguments decided on, as proposed, and the outcome."""

    arguments = serializers.JSONField()
    proposed_arguments = serializers.JSONField()
    outcome = serializers.JSONField()

    class Meta(ToolInvocationSerializer.Meta):
        fields = [
            *ToolInvocationSerializer.Meta.fields,
            "arguments",
            "proposed_arguments",
            "outcome",
        ]
        read_only_fields = fields


class ModelCallSerializer(serializers.ModelSerializer):
    """One model call: tokens, cost, latency (never its prompt or response)."""

    agent = serializers.CharField(source="agent_slug")
    run = serializers.IntegerField(source="run_id", allow_null=True)
    step = serializers.CharField(source="step_id")

    class Meta:
        model = ModelCall
        fields = [
            "id",
            "agent",
            "provider",
            "model",
            "run",
            "step",
            "key",
            "input_tokens",
            "output_tokens",
            "cost",
            "latency_ms",
            "attempts",
            "tool_calls",
            "error",
            "created_at",
        ]
        read_only_fields = fields


class ExchangeSerializer(serializers.Serializer):
    """A model call's prompt and response, as its audit entry holds them."""

    visible = serializers.BooleanField(
        help_text="False unless the caller may read the audit trail (then nothing else is given)."
    )
    audit_entry = serializers.IntegerField(allow_null=True)
    erased = serializers.BooleanField()
    prompt = serializers.JSONField(allow_null=True)
    tools = serializers.ListField(child=serializers.CharField(), allow_null=True)
    response = serializers.JSONField(allow_null=True)


class ModelCallDetailSerializer(ModelCallSerializer):
    """One model call, with its exchange for a caller who may read the audit trail."""

    exchange = serializers.SerializerMethodField()

    class Meta(ModelCallSerializer.Meta):
        fields = [*ModelCallSerializer.Meta.fields, "exchange"]
        read_only_fields = fields

    @extend_schema_field(ExchangeSerializer)
    def get_exchange(self, obj) -> dict:
        """Return the exchange the view found (or that it is not the caller's to read)."""
        return ExchangeSerializer(self.context["exchange"]).data
