"""What the governance API shows of principals, tokens, approvals and escalations."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from audit.evidence import canonical_json
from governance.models import (
    ApiToken,
    ApprovalDecision,
    ApprovalRequest,
    DecisionKind,
    Escalation,
    Resolution,
)


class TokenSerializer(serializers.ModelSerializer):
    """A token as its holder sees it: never the secret, which exists only when issued."""

    class Meta:
        model = ApiToken
        fields = ["prefix", "name", "read_only", "expires_at", "created_at", "last_used_at"]
        read_only_fields = fields


class WhoAmISerializer(serializers.Serializer):
    """Who the caller is to Steward: the principal, its kind and owner, its roles, its token."""

    username = serializers.CharField()
    kind = serializers.ChoiceField(choices=["person", "agent", "integration"])
    display_name = serializers.CharField(allow_blank=True)
    accountable_owner = serializers.CharField(allow_null=True)
    roles = serializers.ListField(child=serializers.CharField())
    token = TokenSerializer(allow_null=True)


# --- approvals and escalations ------------------------------------------------------------------


class TargetSerializer(serializers.Serializer):
    """What a request is about: the object's type, id and name as copied when it was asked."""

    type = serializers.CharField(source="target_type")
    id = serializers.CharField(source="target_id")
    repr = serializers.CharField(source="target_repr")


class EligibilitySerializer(serializers.Serializer):
    """Whether the caller may decide (or resolve) now; when not, the rule's code and reason."""

    allowed = serializers.BooleanField()
    code = serializers.CharField(allow_blank=True)
    reason = serializers.CharField(source="message", allow_blank=True)
    role = serializers.CharField(source="role.name", allow_null=True, default=None)
    on_behalf_of = serializers.CharField(
        source="on_behalf_of.username", allow_null=True, default=None
    )


class ApprovalsCountSerializer(serializers.Serializer):
    """How many distinct people approved so far, out of how many the request needs."""

    given = serializers.IntegerField(source="approvals_given")
    required = serializers.IntegerField(source="approvals_required")


class ApprovalRequestSerializer(serializers.ModelSerializer):
    """One approval request as an inbox lists it."""

    target = TargetSerializer(source="*")
    digest = serializers.CharField(source="arguments_digest")
    requested_by = serializers.CharField(source="requested_by_name")
    role = serializers.CharField(source="role.name", allow_null=True, default=None)
    approvals = ApprovalsCountSerializer(source="*")
    run = serializers.IntegerField(source="run_id", allow_null=True)
    step_run = serializers.IntegerField(source="step_run_id", allow_null=True)
    step = serializers.CharField(source="step_id")

    class Meta:
        model = ApprovalRequest
        fields = [
            "id",
            "status",
            "action",
            "summary",
            "target",
            "digest",
            "risk",
            "requested_by",
            "role",
            "approvals",
            "run",
            "step_run",
            "step",
            "created_at",
            "due_at",
            "expires_at",
            "decided_at",
        ]
        read_only_fields = fields


class PolicyBasisSerializer(serializers.Serializer):
    """The policy decision and approval rule a request (and each decision on it) stands on."""

    policy = serializers.CharField(allow_blank=True)
    policy_version = serializers.IntegerField(allow_null=True)
    policy_rule = serializers.IntegerField(allow_null=True)
    policy_rule_name = serializers.CharField(allow_blank=True)
    approval_rule = serializers.CharField(allow_blank=True)
    approval_rule_version = serializers.IntegerField(allow_null=True)


class ApprovalDecisionSerializer(serializers.ModelSerializer):
    """One person's decision on a request, with the digest and versions it covered."""

    decided_by = serializers.CharField(source="decided_by_name")
    on_behalf_of = serializers.CharField(source="on_behalf_of_name")
    role = serializers.CharField(source="role_name")
    reason = serializers.CharField(source="comment")
    digest = serializers.CharField(source="arguments_digest")

    class Meta:
        model = ApprovalDecision
        fields = [
            "decision",
            "reason",
            "decided_by",
            "on_behalf_of",
            "role",
            "digest",
            "policy_version",
            "approval_rule_version",
            "decided_at",
        ]
        read_only_fields = fields


class ApprovalRequestDetailSerializer(ApprovalRequestSerializer):
    """One request in full: exactly what is approved, on what basis, and whether you may."""

    arguments = serializers.JSONField()
    arguments_canonical = serializers.SerializerMethodField(
        help_text="The RFC 8785 canonical JSON of the arguments; `digest` is its SHA-256."
    )
    run_initiator = serializers.CharField(source="run_initiator_name")
    accountable_owner = serializers.CharField(source="accountable_owner_name")
    basis = serializers.SerializerMethodField()
    level = serializers.IntegerField()
    decisions = ApprovalDecisionSerializer(many=True)
    can_decide = serializers.SerializerMethodField()

    class Meta(ApprovalRequestSerializer.Meta):
        fields = [
            *ApprovalRequestSerializer.Meta.fields,
            "arguments",
            "arguments_canonical",
            "run_initiator",
            "accountable_owner",
            "basis",
            "level",
            "decisions",
            "can_decide",
        ]
        read_only_fields = fields

    def get_arguments_canonical(self, obj) -> str:
        """Return the canonical text the digest is taken over."""
        return canonical_json(obj.arguments if obj.arguments is not None else {}).decode()

    @extend_schema_field(PolicyBasisSerializer)
    def get_basis(self, obj) -> dict:
        """Return the policy and approval-rule versions the request stands on."""
        basis = obj.decision_basis or {}
        return {
            "policy": basis.get("policy_slug", ""),
            "policy_version": obj.policy_version,
            "policy_rule": obj.policy_rule_id,
            "policy_rule_name": basis.get("rule_name", ""),
            "approval_rule": obj.approval_rule.slug if obj.approval_rule else "",
            "approval_rule_version": obj.approval_rule_version,
        }

    @extend_schema_field(EligibilitySerializer)
    def get_can_decide(self, obj) -> dict:
        """Return the eligibility rule's answer for the caller (computed by the view)."""
        return EligibilitySerializer(self.context["eligibility"]).data


class DecisionInputSerializer(serializers.Serializer):
    """A decision: approve, reject or request changes, why, and the digest the decider saw."""

    decision = serializers.ChoiceField(choices=DecisionKind.choices)
    reason = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=4000,
        help_text="Why; required to reject or request changes (the decision service refuses "
        "without it: 422 naming `reason`).",
    )
    digest = serializers.RegexField(
        r"^[0-9a-f]{64}$",
        required=False,
        help_text="The `digest` (SHA-256 of the canonical arguments) you decided on; required "
        "unless an `If-Match` header carries it.",
    )


class EscalationSerializer(serializers.ModelSerializer):
    """One escalation as an inbox lists it."""

    role = serializers.CharField(source="role.name", allow_null=True, default=None)
    raised_by = serializers.CharField(source="raised_by_name")
    run = serializers.IntegerField(source="run_id", allow_null=True)
    step_run = serializers.IntegerField(source="step_run_id", allow_null=True)
    step = serializers.CharField(source="step_id")
    outcome = serializers.CharField(source="resolution")
    resolved_by = serializers.CharField(source="resolved_by_name")

    class Meta:
        model = Escalation
        fields = [
            "id",
            "status",
            "reason",
            "summary",
            "role",
            "raised_by",
            "run",
            "step_run",
            "step",
            "created_at",
            "outcome",
            "resolved_by",
            "resolved_at",
        ]
        read_only_fields = fields


class EscalationDetailSerializer(EscalationSerializer):
    """One escalation in full: its context, the resolution, and whether you may resolve it."""

    context = serializers.JSONField()
    result = serializers.JSONField()
    reason_given = serializers.CharField(source="comment")
    run_initiator = serializers.CharField(source="run_initiator_name")
    accountable_owner = serializers.CharField(source="accountable_owner_name")
    can_resolve = serializers.SerializerMethodField()

    class Meta(EscalationSerializer.Meta):
        fields = [
            *EscalationSerializer.Meta.fields,
            "parked",
            "context",
            "result",
            "reason_given",
            "run_initiator",
            "accountable_owner",
            "can_resolve",
        ]
        read_only_fields = fields

    @extend_schema_field(EligibilitySerializer)
    def get_can_resolve(self, obj) -> dict:
        """Return the eligibility rule's answer for the caller (computed by the view)."""
        return EligibilitySerializer(self.context["eligibility"]).data


class ResolutionInputSerializer(serializers.Serializer):
    """A resolution: take over (with the result), send back for a retry, or stop the run."""

    outcome = serializers.ChoiceField(choices=Resolution.choices)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=4000)
    result = serializers.JSONField(
        required=False, default=None, help_text="For `take_over`: the step's output."
    )
