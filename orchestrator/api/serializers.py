"""What the orchestrator API shows of workflows, versions, runs, steps, events and signals."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from orchestrator.models import (
    RunEvent,
    RunSignal,
    StepRun,
    Workflow,
    WorkflowRun,
    WorkflowVersion,
)
from orchestrator.services import BUSINESS_KEY_POLICIES


@extend_schema_field(OpenApiTypes.ANY)
class AnyJSONField(serializers.JSONField):
    """Any JSON value (an object, list, string, number, boolean or null)."""


class WorkflowSerializer(serializers.ModelSerializer):
    """A workflow and the number of its live version."""

    live_version = serializers.IntegerField(
        source="live_version.number", allow_null=True, read_only=True
    )

    class Meta:
        model = Workflow
        fields = [
            "slug",
            "name",
            "description",
            "is_active",
            "version_approval_required",
            "live_version",
            "created_at",
        ]
        read_only_fields = fields


class VersionSerializer(serializers.ModelSerializer):
    """A workflow version's facts, without its definition."""

    workflow = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    base_version = serializers.IntegerField(
        source="base_version.number", allow_null=True, read_only=True
    )

    class Meta:
        model = WorkflowVersion
        fields = [
            "workflow",
            "number",
            "status",
            "digest",
            "note",
            "published_at",
            "published_by_name",
            "base_version",
            "approval_request",
            "decided_at",
        ]
        read_only_fields = fields


class VersionDetailSerializer(VersionSerializer):
    """A workflow version with its definition and its diff against the version it replaces."""

    definition = serializers.JSONField(read_only=True)

    class Meta(VersionSerializer.Meta):
        fields = [*VersionSerializer.Meta.fields, "definition", "diff"]
        read_only_fields = fields


class PublishSerializer(serializers.Serializer):
    """A definition to publish as the workflow's next version: a JSON object or JSON/YAML text."""

    definition = AnyJSONField(help_text="The definition: an object, or its JSON or YAML text.")
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)

    def validate_definition(self, value):
        """Accept an object or text; the services validate what it says."""
        if not isinstance(value, dict | str):
            raise serializers.ValidationError("A definition is an object, or its JSON/YAML text.")
        return value


class StepSerializer(serializers.ModelSerializer):
    """One step of a run (or one item of a foreach step)."""

    class Meta:
        model = StepRun
        fields = [
            "id",
            "step_id",
            "item_index",
            "parent",
            "step_type",
            "status",
            "attempt",
            "input",
            "output",
            "error",
            "wait_signal",
            "wake_at",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class RunSerializer(serializers.ModelSerializer):
    """A run's facts: its workflow and version, status, business key, who started it, when."""

    workflow = serializers.CharField(source="workflow.slug", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)
    started_by = serializers.CharField(source="started_by_name", read_only=True)

    class Meta:
        model = WorkflowRun
        fields = [
            "id",
            "workflow",
            "version",
            "status",
            "business_key",
            "started_by",
            "trigger",
            "request_id",
            "created_at",
            "updated_at",
            "finished_at",
        ]
        read_only_fields = fields


class RunDetailSerializer(RunSerializer):
    """A run with its input, outcome and steps."""

    input = serializers.JSONField(read_only=True)
    output = AnyJSONField(read_only=True, allow_null=True)
    error = AnyJSONField(read_only=True, allow_null=True)
    steps = StepSerializer(many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "input", "output", "error", "steps"]
        read_only_fields = fields


class EventSerializer(serializers.ModelSerializer):
    """One entry of a run's history."""

    class Meta:
        model = RunEvent
        fields = [
            "id",
            "kind",
            "step_run",
            "step_id",
            "item_index",
            "attempt",
            "data",
            "actor_name",
            "created_at",
        ]
        read_only_fields = fields


class SignalSerializer(serializers.Serializer):
    """A signal to send: its name and payload."""

    name = serializers.CharField(max_length=200)
    payload = AnyJSONField(required=False, allow_null=True, default=None)


class CorrelatedSignalSerializer(SignalSerializer):
    """A signal for the open run of a workflow that holds a business key."""

    business_key = serializers.CharField(max_length=200)


class SentSignalSerializer(serializers.ModelSerializer):
    """A signal as the run received it, and whether a waiting step took it yet."""

    payload = AnyJSONField(read_only=True)

    class Meta:
        model = RunSignal
        fields = ["id", "run", "name", "payload", "sent_by_name", "received_at", "consumed_at"]
        read_only_fields = fields


class StartRunSerializer(serializers.Serializer):
    """A run to start: its workflow, input, business key and conflict policy, and a signal."""

    workflow = serializers.SlugField(max_length=100)
    input = serializers.DictField(required=False, default=dict)
    business_key = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=200
    )
    business_key_policy = serializers.ChoiceField(
        choices=BUSINESS_KEY_POLICIES,
        default="fail",
        help_text="When an open run already holds the business key: `fail` (409) or "
        "`use_existing` (200 with that run).",
    )
    signal = SignalSerializer(
        required=False, allow_null=True, default=None, help_text="Signal-with-start."
    )


class CancelSerializer(serializers.Serializer):
    """Why a run is cancelled."""

    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
