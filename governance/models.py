"""Who may do what: principals, roles, policies, approval rules, delegations, escalations.

Governed models (roles, policies and their rules, approval rules, delegations, principals) keep
their full history with simple-history; each change is also written to the audit log (see
governance/history.py). Approval requests and escalations are records: once decided they are
never edited. Nothing here holds a foreign key to a higher app: a run or a step is referenced by
its copied id, so governance never imports `orchestrator` or `agents`.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from governance.permissions import (
    ApprovalDecisionQuerySet,
    ApprovalRequestQuerySet,
    DelegationQuerySet,
    EscalationLevelQuerySet,
    EscalationQuerySet,
    PolicyRuleQuerySet,
    RestrictedQuerySet,
)

USER = settings.AUTH_USER_MODEL


class PrincipalKind(models.TextChoices):
    PERSON = "person", "Person"
    AGENT = "agent", "Agent"
    INTEGRATION = "integration", "Integration"


class Principal(models.Model):
    """Who a user is for governance: a person, an agent's service account, or an integration."""

    user = models.OneToOneField(USER, on_delete=models.CASCADE, related_name="principal")
    kind = models.CharField(max_length=16, choices=PrincipalKind.choices)
    display_name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        USER,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_principals",
        help_text="The person accountable for what this principal does (required for agents).",
    )
    owner_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["user__username"]

    def __str__(self):
        return f"{self.display_name or self.user.get_username()} ({self.kind})"

    @property
    def is_agent(self) -> bool:
        """Tell whether this principal is an agent's service account."""
        return self.kind == PrincipalKind.AGENT

    def clean(self):
        """Refuse an agent or integration without the person accountable for it."""
        super().clean()
        if self.kind != PrincipalKind.PERSON and self.owner_id is None:
            raise ValidationError(
                {"owner": f"An {self.get_kind_display().lower()} must keep an accountable owner."}
            )


class Role(models.Model):
    """A named mandate: a Django group with a description, an accountable owner and permissions."""

    group = models.OneToOneField(Group, on_delete=models.PROTECT, related_name="role")
    name = models.CharField(max_length=150, unique=True)
    description = models.TextField(blank=True)
    # Required on every save (full_clean); nullable only so that deleting the person keeps the
    # role, with owner_name saying who it was, until someone else takes it over.
    owner = models.ForeignKey(
        USER,
        null=True,
        on_delete=models.SET_NULL,
        related_name="owned_roles",
        help_text="The person accountable for who holds this role and what it may do.",
    )
    owner_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class RoleChangeKind(models.TextChoices):
    MEMBER_ADDED = "member_added", "Member added"
    MEMBER_REMOVED = "member_removed", "Member removed"
    PERMISSION_GRANTED = "permission_granted", "Permission granted"
    PERMISSION_REVOKED = "permission_revoked", "Permission revoked"


class RoleChange(models.Model):
    """Who changed a role's members or permissions, when and why (groups keep no history).

    The latest change of a membership or a permission says who granted what is in force now;
    the eligibility rule reads it to exclude a person from using a power they gave themselves.
    """

    role = models.ForeignKey(Role, null=True, on_delete=models.SET_NULL, related_name="changes")
    role_name = models.CharField(max_length=150)
    kind = models.CharField(max_length=20, choices=RoleChangeKind.choices)
    member = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    member_name = models.CharField(max_length=150, blank=True)
    permission = models.CharField(max_length=200, blank=True, help_text="'app.codename'.")
    target_ct = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    target_id = models.CharField(max_length=64, blank=True, help_text="Empty: model-wide.")
    target_repr = models.CharField(max_length=200, blank=True)
    actor = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True, help_text="Empty: the system.")
    reason = models.CharField(max_length=200, blank=True)
    at = models.DateTimeField()

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["role", "kind"], name="role_change_role_kind")]

    def __str__(self):
        what = self.member_name or self.permission
        if self.target_id:
            what += f" on {self.target_repr or self.target_id}"
        by = self.actor_name or "the system"
        return f"{self.role_name}: {self.get_kind_display().lower()} {what} by {by}"


class RiskLevel(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"


RISK_ORDER = {RiskLevel.LOW: 0, RiskLevel.MEDIUM: 1, RiskLevel.HIGH: 2, RiskLevel.CRITICAL: 3}


class ApprovalRule(models.Model):
    """Who approves, how many distinct approvers, within which SLA, and where it escalates."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    role = models.ForeignKey(
        Role, on_delete=models.PROTECT, related_name="approval_rules", help_text="Who approves."
    )
    approvals_required = models.PositiveSmallIntegerField(
        default=1, help_text="Distinct approvers needed (critical risk needs at least two)."
    )
    sla_seconds = models.PositiveIntegerField(
        default=3600, help_text="Time each level of the chain has before the request escalates."
    )
    escalation_roles = models.ManyToManyField(
        Role, through="EscalationLevel", related_name="+", blank=True
    )
    version = models.PositiveIntegerField(default=1, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.name

    def chain(self) -> list[Role]:
        """Return the roles in escalation order: the approver role first, then each level."""
        levels = self.levels.select_related("role").order_by("position")
        return [self.role, *(level.role for level in levels)]


class EscalationLevel(models.Model):
    """One hop of an approval rule's escalation chain."""

    rule = models.ForeignKey(ApprovalRule, on_delete=models.CASCADE, related_name="levels")
    position = models.PositiveSmallIntegerField()
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="+")
    history = HistoricalRecords()

    objects = EscalationLevelQuerySet.as_manager()

    class Meta:
        ordering = ["rule", "position"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "position"], name="escalation_level_unique")
        ]

    def __str__(self):
        return f"{self.rule.slug} level {self.position}: {self.role}"


class Policy(models.Model):
    """A versioned set of rules; each change to it or its rules makes a new version."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    priority = models.IntegerField(default=100, help_text="Lower runs first.")
    is_active = models.BooleanField(default=True)
    version = models.PositiveIntegerField(default=1, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["priority", "slug"]
        verbose_name_plural = "policies"

    def __str__(self):
        return f"{self.name} v{self.version}"


class Effect(models.TextChoices):
    ALLOW = "allow", "Allow"
    DENY = "deny", "Deny"
    REQUIRE_APPROVAL = "require_approval", "Require approval"
    ESCALATE = "escalate", "Escalate to a human"


class RuleStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    DRAFT = "draft", "Draft (dry run only)"
    DISABLED = "disabled", "Disabled"


class PolicyRule(models.Model):
    """One rule: for matching actions whose condition holds, allow, deny, ask or escalate."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveIntegerField(default=10, help_text="Rules run in this order.")
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=RuleStatus.choices, default=RuleStatus.ACTIVE)
    action = models.CharField(
        max_length=200,
        default="*",
        help_text="Actions this rule covers, as a glob: 'tool.refund', 'tool.*', 'memory.write'.",
    )
    condition = models.TextField(
        blank=True,
        help_text="An expression over actor, action, target, classification, arguments, risk "
        "and run, e.g. \"arguments.amount > 1000 and classification == 'confidential'\". "
        "Empty: always.",
    )
    effect = models.CharField(max_length=20, choices=Effect.choices)
    reason = models.CharField(max_length=500, blank=True, help_text="Told to whoever is denied.")
    approval_rule = models.ForeignKey(
        ApprovalRule,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="policy_rules",
        help_text="For 'require approval': who approves and how many.",
    )
    escalate_to = models.ForeignKey(
        Role,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="For 'escalate': the role whose members take the task.",
    )
    risk = models.CharField(max_length=16, choices=RiskLevel.choices, default=RiskLevel.MEDIUM)
    replaces = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="replaced_by",
        help_text="For a draft: the active rule of its policy it takes the place of when the "
        "draft is published (empty: the draft adds a rule).",
    )
    version = models.PositiveIntegerField(
        default=1, editable=False, help_text="The policy version this rule was last changed in."
    )
    history = HistoricalRecords()

    objects = PolicyRuleQuerySet.as_manager()

    class Meta:
        ordering = ["policy", "position", "id"]

    def __str__(self):
        return f"{self.policy.slug}: {self.name}"


class Delegation(models.Model):
    """Out of office: a person's approvals go to a delegate for a period (optionally one role)."""

    delegator = models.ForeignKey(USER, on_delete=models.CASCADE, related_name="delegations_out")
    delegate = models.ForeignKey(USER, on_delete=models.CASCADE, related_name="delegations_in")
    role = models.ForeignKey(
        Role,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="delegations",
        help_text="Only this role's requests; empty: all of them.",
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    note = models.CharField(max_length=500, blank=True, help_text="Why: holiday, sick leave...")
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    objects = DelegationQuerySet.as_manager()

    class Meta:
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=models.F("starts_at")), name="delegation_window_positive"
            ),
            models.CheckConstraint(
                condition=~Q(delegator=models.F("delegate")), name="delegation_not_to_self"
            ),
        ]

    def __str__(self):
        window = f"{self.starts_at:%Y-%m-%d} – {self.ends_at:%Y-%m-%d}"
        return f"{self.delegator} → {self.delegate} ({window})"

    def active_at(self, moment) -> bool:
        """Tell whether the delegation is in force at a moment."""
        return self.revoked_at is None and self.starts_at <= moment < self.ends_at


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    CHANGES_REQUESTED = "changes_requested", "Changes requested"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled"


class ApprovalRequest(models.Model):
    """Exactly what is being approved, bound to the SHA-256 digest of its arguments."""

    status = models.CharField(
        max_length=20, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING
    )
    action = models.CharField(max_length=200)
    summary = models.TextField(blank=True)
    target_ct = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    arguments = models.JSONField(default=dict, blank=True)
    arguments_digest = models.CharField(max_length=64, help_text="SHA-256 of canonical arguments.")
    risk = models.CharField(max_length=16, choices=RiskLevel.choices, default=RiskLevel.MEDIUM)
    requested_by = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by_name = models.CharField(max_length=150, blank=True)
    run_initiator = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    run_initiator_name = models.CharField(max_length=150, blank=True)
    accountable_owner = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    accountable_owner_name = models.CharField(max_length=150, blank=True)
    run_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    step_run_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    step_id = models.CharField(max_length=100, blank=True)
    policy = models.ForeignKey(
        Policy, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    policy_rule = models.ForeignKey(
        PolicyRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    policy_version = models.PositiveIntegerField(null=True, blank=True)
    approval_rule = models.ForeignKey(
        ApprovalRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="requests"
    )
    approval_rule_version = models.PositiveIntegerField(null=True, blank=True)
    decision_basis = models.JSONField(
        default=dict, blank=True, help_text="The policy decision that required this approval."
    )
    role = models.ForeignKey(
        Role,
        null=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The role at the current level of the escalation chain.",
    )
    chain = models.JSONField(default=list, help_text="Role ids in escalation order.")
    eligible_roles = models.ManyToManyField(
        Role, related_name="+", blank=True, help_text="The roles reached so far along the chain."
    )
    level = models.PositiveSmallIntegerField(default=0)
    sla_seconds = models.PositiveIntegerField(help_text="Time each level has before escalating.")
    approvals_required = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField()
    due_at = models.DateTimeField(help_text="When the current level's SLA ends.")
    expires_at = models.DateTimeField(help_text="After this no decision is accepted.")
    decided_at = models.DateTimeField(null=True, blank=True)

    objects = ApprovalRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("decide_approvalrequest", "Can decide approval requests")]
        indexes = [models.Index(fields=["status", "due_at"], name="approval_pending_due")]

    def __str__(self):
        return f"Approval #{self.pk}: {self.action}"

    @property
    def signal_name(self) -> str:
        """Return the name of the signal that announces this request's outcome to its run."""
        return f"approval:{self.pk}"

    @property
    def is_final(self) -> bool:
        """Tell whether the request is decided, expired or cancelled."""
        return self.status != ApprovalStatus.PENDING


class DecisionKind(models.TextChoices):
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"
    REQUEST_CHANGES = "request_changes", "Request changes"


class ApprovalDecision(models.Model):
    """One person's decision on a request: who, when, on whose behalf, under which policy."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.PROTECT, related_name="decisions")
    decision = models.CharField(max_length=20, choices=DecisionKind.choices)
    comment = models.TextField(blank=True)
    decided_by = models.ForeignKey(USER, null=True, on_delete=models.SET_NULL, related_name="+")
    decided_by_name = models.CharField(max_length=150)
    on_behalf_of = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    on_behalf_of_name = models.CharField(max_length=150, blank=True)
    role = models.ForeignKey(Role, null=True, on_delete=models.SET_NULL, related_name="+")
    role_name = models.CharField(max_length=150, blank=True)
    arguments_digest = models.CharField(max_length=64)
    policy_version = models.PositiveIntegerField(null=True, blank=True)
    approval_rule_version = models.PositiveIntegerField(null=True, blank=True)
    decided_at = models.DateTimeField()

    objects = ApprovalDecisionQuerySet.as_manager()

    class Meta:
        ordering = ["request", "decided_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "decided_by"], name="one_decision_per_approver"
            )
        ]

    def __str__(self):
        return f"{self.decided_by_name}: {self.decision} #{self.request_id}"


class ApprovalSeen(models.Model):
    """When an eligible approver first opened a request: it stops waiting to be seen."""

    request = models.OneToOneField(
        ApprovalRequest, primary_key=True, on_delete=models.CASCADE, related_name="seen"
    )
    seen_by = models.ForeignKey(USER, null=True, on_delete=models.SET_NULL, related_name="+")
    seen_by_name = models.CharField(max_length=150)
    seen_at = models.DateTimeField()

    objects = ApprovalDecisionQuerySet.as_manager()

    def __str__(self):
        return f"#{self.request_id} seen by {self.seen_by_name} at {self.seen_at}"


class EscalationStatus(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"
    CANCELLED = "cancelled", "Cancelled"


class Resolution(models.TextChoices):
    TAKE_OVER = "take_over", "Take over and supply the result"
    RETRY = "retry", "Send back for a retry"
    STOP = "stop", "Stop the run"


class Escalation(models.Model):
    """A task for a person: an agent was unsure, a step failed after its retries, a policy asked."""

    status = models.CharField(
        max_length=16, choices=EscalationStatus.choices, default=EscalationStatus.OPEN
    )
    reason = models.CharField(
        max_length=32,
        help_text="step_failed, low_confidence, invalid_result, policy, ...",
    )
    summary = models.TextField(blank=True)
    context = models.JSONField(default=dict, blank=True, help_text="The error, the result, ...")
    role = models.ForeignKey(
        Role, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    run_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    step_run_id = models.BigIntegerField(null=True, blank=True)
    step_id = models.CharField(max_length=100, blank=True)
    parked = models.BooleanField(
        default=False,
        help_text="The engine parked the failed step; otherwise the step waits for the signal.",
    )
    raised_by = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    raised_by_name = models.CharField(max_length=150, blank=True)
    # Separation of duties: neither the run's initiator nor the person accountable for the agent
    # that raised it resolves it (copied when it opens, like an approval request's).
    run_initiator = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    run_initiator_name = models.CharField(max_length=150, blank=True)
    accountable_owner = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    accountable_owner_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField()
    resolution = models.CharField(max_length=16, choices=Resolution.choices, blank=True)
    result = models.JSONField(null=True, blank=True, help_text="The output a person supplied.")
    comment = models.TextField(blank=True)
    resolved_by = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_by_name = models.CharField(max_length=150, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    objects = EscalationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("resolve_escalation", "Can resolve escalations")]

    def __str__(self):
        return f"Escalation #{self.pk}: {self.reason}"

    @property
    def signal_name(self) -> str:
        """Return the name of the signal that announces the resolution to a waiting step."""
        return f"escalation:{self.pk}"


class ApiTokenQuerySet(RestrictedQuerySet):
    """API tokens: a person sees and revokes the tokens that act as them or that they issued."""

    def owner_q(self, user, action):
        """The tokens of `user` and the ones `user` issued."""
        if action in ("view", "change"):
            return Q(user=user) | Q(created_by=user)
        return None

    def usable_at(self, moment) -> ApiTokenQuerySet:
        """Return the tokens neither revoked nor expired at a moment."""
        return self.filter(revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=moment)
        )


class ApiToken(models.Model):
    """A bearer token an integration or a person calls the API with; only its keyed hash is kept.

    The token itself (`stw_<id>_<secret>`) is shown once, when it is issued. `prefix` (`stw_<id>`)
    names it in lists, logs and audit entries and is what a leaked-secret scanner greps for.
    """

    user = models.ForeignKey(
        USER,
        on_delete=models.CASCADE,
        related_name="api_tokens",
        help_text="The principal the token acts as: its permissions are the token's.",
    )
    name = models.CharField(max_length=200, help_text="What the token is for.")
    prefix = models.CharField(max_length=32, unique=True)
    digest = models.CharField(max_length=64, help_text="HMAC-SHA256 of the token (keyed).")
    read_only = models.BooleanField(
        default=False, help_text="Only reads (GET, HEAD, OPTIONS) are accepted with it."
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by_name = models.CharField(max_length=150, blank=True)
    revoke_reason = models.CharField(max_length=500, blank=True)
    # Written at most once a minute by a conditional update: telemetry, not a governed change.
    last_used_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords(excluded_fields=["last_used_at"])

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self):
        return f"{self.prefix}… ({self.name})"

    def usable_at(self, moment) -> bool:
        """Tell whether the token is neither revoked nor expired at a moment."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > moment)


# --- outbound webhooks ---------------------------------------------------------------------------


class WebhookEventType(models.TextChoices):
    RUN_STARTED = "run.started", "Run started"
    RUN_SUCCEEDED = "run.succeeded", "Run succeeded"
    RUN_FAILED = "run.failed", "Run failed"
    RUN_WAITING = "run.waiting", "Run waiting (a step waits for a signal, timer or decision)"
    APPROVAL_REQUESTED = "approval.requested", "Approval requested"
    APPROVAL_DECIDED = "approval.decided", "Approval decided"
    ESCALATION_OPENED = "escalation.opened", "Escalation opened"
    ESCALATION_RESOLVED = "escalation.resolved", "Escalation resolved"
    AGENT_QUARANTINED = "agent.quarantined", "Agent quarantined"


class WebhookSubscriptionQuerySet(RestrictedQuerySet):
    """Subscriptions: an integration sees and changes its own; the rest goes through permissions."""

    def owner_q(self, user, action):
        """The subscriptions `user` (an integration) owns."""
        return Q(owner=user) if action in ("view", "change", "delete") else None


class WebhookSubscription(models.Model):
    """Where an integration wants Steward's events POSTed, signed per Standard Webhooks.

    The signing secret (`whsec_` + base64 of 32 random bytes) is symmetric: Steward needs it to
    sign, so it is kept Fernet-encrypted with STEWARD_SECRETS_KEY and shown only when created.
    """

    owner = models.ForeignKey(
        USER,
        on_delete=models.CASCADE,
        related_name="webhook_subscriptions",
        help_text="The integration principal the events go to; it sees only what it may view.",
    )
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=300, blank=True)
    event_types = models.JSONField(default=list, help_text="The event types it receives.")
    secret_encrypted = models.TextField(editable=False)
    active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    created_by_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    objects = WebhookSubscriptionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.owner} → {self.url}"


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed (not retried: refused, 410, or its subscription disabled)"
    DEAD = "dead", "Dead (every retry failed)"


class WebhookDeliveryQuerySet(RestrictedQuerySet):
    """Deliveries: seen with their subscription."""

    permission_parent = "subscription"


class WebhookDelivery(models.Model):
    """The outbox: one event for one subscription, written in the event's transaction."""

    subscription = models.ForeignKey(
        WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_type = models.CharField(max_length=64, choices=WebhookEventType.choices)
    webhook_id = models.CharField(max_length=64, unique=True, help_text="The `webhook-id` header.")
    payload = models.JSONField(help_text="The body sent: type, timestamp and data (ids, facts).")
    status = models.CharField(
        max_length=16, choices=WebhookDeliveryStatus.choices, default=WebhookDeliveryStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    replay_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replays"
    )
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = WebhookDeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_delivery_due",
                condition=Q(status="pending"),
            )
        ]

    def __str__(self):
        return f"{self.event_type} {self.webhook_id} ({self.status})"


# --- live events ---------------------------------------------------------------------------------


class LiveEvent(models.Model):
    """One change the web app's live pages learn of: its type and the object's ids, never data.

    Written in the transaction that made the change (governance.actions.events.announce).
    Consumers read them in (txid, id) order and only below the commit horizon, so a cursor on
    (txid, id) never skips a row whose id committed late (governance/live.py).
    """

    # PostgreSQL fills this with pg_current_xact_id() (migration 0006); SQLite keeps 0.
    txid = models.BigIntegerField(db_default=0, editable=False)
    event_type = models.CharField(max_length=64)
    target_type = models.CharField(max_length=100, help_text="app_label.model of the object.")
    target_id = models.CharField(max_length=64)
    created_at = models.DateTimeField()

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["txid", "id"]
        indexes = [
            models.Index(fields=["txid", "id"], name="live_event_cursor"),
            models.Index(fields=["created_at"], name="live_event_created"),
        ]

    def __str__(self):
        return f"{self.event_type} {self.target_type}:{self.target_id}"


# --- notifications -------------------------------------------------------------------------------


class ApprovalNoticeQuerySet(RestrictedQuerySet):
    """The journal of notices sent: each person sees those sent to them; the rest by permission."""

    def owner_q(self, user, action):
        """The notices sent to `user`."""
        return Q(recipient=user) if action == "view" else None


class ApprovalNotice(models.Model):
    """One notice sent to one person about one request: the journal that keeps a redelivered
    task from sending it twice (one row per request and recipient)."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="notices")
    recipient = models.ForeignKey(USER, null=True, on_delete=models.SET_NULL, related_name="+")
    recipient_name = models.CharField(max_length=150)
    address = models.CharField(max_length=254, help_text="Where the email went.")
    level = models.PositiveSmallIntegerField(help_text="The request's level when it was sent.")
    sent_at = models.DateTimeField()

    objects = ApprovalNoticeQuerySet.as_manager()

    class Meta:
        ordering = ["sent_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "recipient"], name="one_notice_per_request_and_recipient"
            )
        ]

    def __str__(self):
        return f"notice of request #{self.request_id} to {self.recipient_name}"
