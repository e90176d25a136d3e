"""Agents and what they work with: providers, governed tools, tickets, notifications, memory.

Governed models (providers, agents, tools, tickets, memory namespaces) keep their full history
with simple-history, and governance writes each change to the audit log. Records of what agents
did (model calls, tool invocations) are append-only and copy the names they refer to, so they
outlive what they describe. Runs and steps are referenced by copied ids: `agents` never imports
the engine.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from agents.providers import ProviderConfig
from governance.models import RiskLevel
from governance.permissions import RestrictedQuerySet

USER = settings.AUTH_USER_MODEL


class NotificationQuerySet(RestrictedQuerySet):
    """Notifications: a person always sees their own inbox; the rest goes through permissions."""

    def owner_q(self, user, action):
        """The notifications addressed to `user` (to view them)."""
        return Q(recipient=user) if action == "view" else None


class MemoryEntryQuerySet(RestrictedQuerySet):
    """Memory entries: whoever may view (or change) a namespace may view its entries."""

    permission_parent = "namespace"


class AgentRecordQuerySet(RestrictedQuerySet):
    """What an agent did (model calls, tool invocations, rate counters): seen with the agent."""

    permission_parent = "agent"


class TicketCommentQuerySet(RestrictedQuerySet):
    """A ticket's comments: visible to whoever may view the ticket."""

    permission_parent = "ticket"


class MemoryValueCopyQuerySet(RestrictedQuerySet):
    """Held copies of memory values: governed by their namespace, like its entries."""

    permission_parent = "namespace"


class ProviderKind(models.TextChoices):
    OPENAI = "openai", "OpenAI-compatible (OpenAI, vLLM, Ollama, LM Studio)"
    ANTHROPIC = "anthropic", "Anthropic messages"
    SCRIPTED = "scripted", "Scripted (offline rules, not a model)"


class ModelProvider(models.Model):
    """Where an agent's model runs: the endpoint, its limits and prices, and an encrypted key."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=ProviderKind.choices)
    base_url = models.URLField(
        blank=True, help_text="Empty: the provider's public API. For vLLM/Ollama: .../v1"
    )
    api_key_encrypted = models.TextField(
        blank=True, editable=False, help_text="Fernet-encrypted with STEWARD_SECRETS_KEY."
    )
    timeout_seconds = models.FloatField(default=60.0, validators=[MinValueValidator(0.1)])
    max_retries = models.PositiveSmallIntegerField(
        default=3, help_text="Retries on timeouts, broken replies, 429 and 5xx."
    )
    max_output_tokens = models.PositiveIntegerField(default=1024)
    input_price_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal(0), help_text="Per million input tokens."
    )
    output_price_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal(0), help_text="Per million output tokens."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords(excluded_fields=["api_key_encrypted"])

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return f"{self.name} ({self.get_kind_display()})"

    @property
    def has_api_key(self) -> bool:
        """Tell whether a key is stored (never what it is)."""
        return bool(self.api_key_encrypted)

    def config(self, model: str, script: dict | None = None) -> ProviderConfig:
        """Return the configuration of one call, with the key decrypted for it."""
        from agents import secrets

        return ProviderConfig(
            kind=self.kind,
            name=self.slug,
            model=model,
            base_url=self.base_url,
            api_key=secrets.decrypt(self.api_key_encrypted),
            timeout=self.timeout_seconds,
            max_retries=self.max_retries,
            max_output_tokens=self.max_output_tokens,
            input_price_per_mtok=self.input_price_per_mtok,
            output_price_per_mtok=self.output_price_per_mtok,
            script=script,
        )


class Tool(models.Model):
    """The governed mirror of a registered tool: admins enable it, set risk, rate and approval."""

    name = models.CharField(max_length=200, unique=True, help_text="The registered tool's name.")
    description = models.TextField(blank=True, help_text="What the model is told the tool does.")
    side_effects = models.BooleanField(default=True, editable=False)
    risk = models.CharField(max_length=16, choices=RiskLevel.choices, default=RiskLevel.LOW)
    enabled = models.BooleanField(
        default=False, help_text="Disabled tools are refused to every agent and tool step."
    )
    rate_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Calls per agent per window; empty: no limit."
    )
    rate_window_seconds = models.PositiveIntegerField(default=60)
    approval_rule = models.ForeignKey(
        "governance.ApprovalRule",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Every call needs this approval (on top of what policies decide).",
    )
    config = models.JSONField(
        default=dict, blank=True, help_text="Tool settings, e.g. the HTTP tool's allow-list."
    )
    registered = models.BooleanField(
        default=True, editable=False, help_text="False when no code registers this name any more."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class AgentStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    QUARANTINED = "quarantined", "Quarantined"


class Agent(models.Model):
    """An agent: its mandate, accountable owner, model, tools, limits and kill switch."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    mandate = models.TextField(help_text="What this agent is for; told to its model.")
    owner = models.ForeignKey(
        USER,
        null=True,
        on_delete=models.SET_NULL,
        related_name="owned_agents",
        help_text="The person accountable for what this agent does.",
    )
    owner_name = models.CharField(max_length=150, blank=True, editable=False)
    user = models.OneToOneField(
        USER,
        on_delete=models.PROTECT,
        related_name="agent",
        editable=False,
        help_text="The agent's service account: its permissions are the agent's.",
    )
    roles = models.ManyToManyField("governance.Role", blank=True, related_name="agents")
    provider = models.ForeignKey(ModelProvider, on_delete=models.PROTECT, related_name="agents")
    model = models.CharField(max_length=200, help_text="The model name at the provider.")
    instructions = models.TextField(blank=True)
    script = models.JSONField(
        null=True,
        blank=True,
        help_text="For a scripted provider: the rules it answers with (see docs/agents.md).",
    )
    tools = models.ManyToManyField(Tool, blank=True, related_name="agents")
    delegates = models.ManyToManyField(
        "self",
        symmetrical=False,
        blank=True,
        related_name="coordinators",
        help_text="The specialised agents this one may delegate to (needs the delegate tool).",
    )
    output_schema = models.JSONField(
        default=dict, blank=True, help_text="JSON Schema of its result when delegated to."
    )
    confidence_threshold = models.FloatField(
        default=0.7,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Results below this confidence go to a person.",
    )
    max_steps = models.PositiveIntegerField(
        default=10, help_text="Model calls per run (all its steps)."
    )
    max_tokens = models.PositiveIntegerField(
        default=50_000, help_text="Tokens per run (all its steps)."
    )
    max_cost = models.DecimalField(
        max_digits=10,
        decimal_places=4,
        default=Decimal("1.00"),
        help_text="Cost per run (all its steps).",
    )
    max_wall_seconds = models.PositiveIntegerField(
        default=900, help_text="Wall time per agent step, waits for approvals excluded."
    )
    status = models.CharField(
        max_length=16, choices=AgentStatus.choices, default=AgentStatus.ACTIVE
    )
    status_reason = models.CharField(max_length=500, blank=True)
    last_active_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords(m2m_fields=[roles, tools])

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.name

    @property
    def is_scripted(self) -> bool:
        """Tell whether this agent answers from declared rules rather than a model."""
        return self.provider.kind == ProviderKind.SCRIPTED

    @property
    def is_active(self) -> bool:
        """Tell whether the kill switch lets this agent act."""
        return self.status == AgentStatus.ACTIVE


class ModelCall(models.Model):
    """One model call of an agent: tokens, cost, latency (prompt and response are in the audit)."""

    agent = models.ForeignKey(
        Agent, null=True, on_delete=models.SET_NULL, related_name="model_calls"
    )
    agent_slug = models.CharField(max_length=100)
    provider = models.CharField(max_length=100)
    model = models.CharField(max_length=200)
    key = models.CharField(max_length=300, unique=True, help_text="The journal key of the call.")
    run_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    step_id = models.CharField(max_length=200, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=8, default=Decimal(0))
    latency_ms = models.FloatField(default=0)
    attempts = models.PositiveSmallIntegerField(default=1)
    tool_calls = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField()

    objects = AgentRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.agent_slug} → {self.model}"


class Verdict(models.TextChoices):
    ALLOW = "allow", "Allowed"
    DENY = "deny", "Denied"
    APPROVAL = "approval", "Needs approval"
    ESCALATE = "escalate", "Escalated"


class ToolInvocation(models.Model):
    """One proposed tool call (an agent's or a tool step's) and what the control layer did."""

    agent = models.ForeignKey(
        Agent, null=True, on_delete=models.SET_NULL, related_name="invocations"
    )
    agent_slug = models.CharField(max_length=100, blank=True)
    caller_kind = models.CharField(
        max_length=16, default="agent", help_text="Who the call acts for: agent, user or system."
    )
    caller_name = models.CharField(
        max_length=150, blank=True, help_text="The agent's slug or the person's username."
    )
    tool = models.CharField(max_length=200)
    arguments = models.JSONField(
        null=True, blank=True, help_text="The arguments decided on: canonical, once resolved."
    )
    proposed_arguments = models.JSONField(
        null=True, blank=True, help_text="The arguments as proposed, when resolving changed them."
    )
    arguments_digest = models.CharField(max_length=64, blank=True)
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    stage = models.CharField(
        max_length=32, help_text="The check that decided: status, mandate, arguments, ..."
    )
    reason = models.TextField(blank=True)
    policy = models.CharField(max_length=100, blank=True)
    policy_version = models.PositiveIntegerField(null=True, blank=True)
    policy_rule = models.BigIntegerField(null=True, blank=True)
    approval_request = models.BigIntegerField(null=True, blank=True)
    escalation = models.BigIntegerField(null=True, blank=True)
    policy_facts = models.JSONField(
        null=True,
        blank=True,
        help_text="For a call that reached the policy check: the context it was decided on and "
        "the tool's own approval rule then (what a policy dry run replays).",
    )
    key = models.CharField(max_length=300, unique=True, help_text="The journal key of the call.")
    run_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    step_id = models.CharField(max_length=200, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.JSONField(null=True, blank=True, help_text="Result or error, once run.")
    created_at = models.DateTimeField()

    objects = AgentRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["created_at", "id"], name="tool_invocation_time")]

    def __str__(self):
        return f"{self.caller_name or self.agent_slug}: {self.tool} ({self.verdict})"


class DryRunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class PolicyDryRunQuerySet(RestrictedQuerySet):
    """Dry runs: seen and run by whoever may change their policy (its governance admins)."""

    permission_parent = "policy"

    def restrict(self, user, action: str = "view") -> PolicyDryRunQuerySet:
        """Return the dry runs of the policies `user` may change (past calls are in them)."""
        return super().restrict(user, "change")


class PolicyDryRunChangeQuerySet(RestrictedQuerySet):
    """A dry run's changed calls: seen with the dry run."""

    permission_parent = "dry_run"


class PolicyDryRun(models.Model):
    """A policy's draft version replayed on the recorded tool calls of a period, and the result.

    The rules evaluated are snapshots taken when it was asked for (the draft version, and the
    live rules for comparison); only the calls whose outcome the draft changes are kept, as
    PolicyDryRunChange rows, beside the totals.
    """

    policy = models.ForeignKey(
        "governance.Policy", null=True, on_delete=models.SET_NULL, related_name="dry_runs"
    )
    policy_slug = models.CharField(max_length=100)
    policy_version = models.PositiveIntegerField(help_text="The policy version the draft is on.")
    draft_rule_ids = models.JSONField(default=list, help_text="The draft rules evaluated.")
    draft_rules = models.JSONField(help_text="The rules of the draft version, in order.")
    live_rules = models.JSONField(help_text="The live rules when it was asked for, in order.")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    status = models.CharField(
        max_length=16, choices=DryRunStatus.choices, default=DryRunStatus.QUEUED
    )
    total = models.PositiveIntegerField(default=0, help_text="Recorded calls in the period.")
    processed = models.PositiveIntegerField(default=0)
    # Calls are replayed in (created_at, id) order; the cursor is the last one replayed.
    cursor_at = models.DateTimeField(null=True, blank=True)
    cursor_id = models.BigIntegerField(default=0)
    counts = models.JSONField(
        default=dict,
        blank=True,
        help_text="Calls by verdict as recorded, under the live rules and with the draft, the "
        "changes by (recorded, draft) pair, and the calls decided before the policy check.",
    )
    changed = models.PositiveIntegerField(default=0, help_text="Calls whose outcome changes.")
    claim = models.CharField(max_length=64, blank=True, help_text="The worker run holding it.")
    lease_until = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(USER, null=True, on_delete=models.SET_NULL, related_name="+")
    requested_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = PolicyDryRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "policy dry run"

    def __str__(self):
        return f"Dry run #{self.pk} of {self.policy_slug} v{self.policy_version} draft"

    @property
    def percent(self) -> int:
        """Return how far the replay is, in percent of the period's calls."""
        if self.status == DryRunStatus.DONE:
            return 100
        return int(100 * self.processed / self.total) if self.total else 0

    @property
    def is_finished(self) -> bool:
        """Tell whether the replay is over (done or failed)."""
        return self.status in (DryRunStatus.DONE, DryRunStatus.FAILED)


class PolicyDryRunChange(models.Model):
    """One recorded tool call whose outcome the draft changes: what happened, and what would."""

    dry_run = models.ForeignKey(PolicyDryRun, on_delete=models.CASCADE, related_name="changes")
    invocation_id = models.BigIntegerField(help_text="The ToolInvocation replayed (its id).")
    created_at = models.DateTimeField(help_text="When the call was made.")
    caller_name = models.CharField(max_length=150, blank=True)
    tool = models.CharField(max_length=200)
    run_id = models.BigIntegerField(null=True, blank=True)
    recorded = models.CharField(max_length=16, choices=Verdict.choices)
    live = models.CharField(
        max_length=16, choices=Verdict.choices, help_text="Under the live rules of the dry run."
    )
    draft = models.CharField(max_length=16, choices=Verdict.choices)
    draft_rule_id = models.BigIntegerField(null=True, blank=True)
    draft_rule_name = models.CharField(max_length=200, blank=True)

    objects = PolicyDryRunChangeQuerySet.as_manager()

    class Meta:
        ordering = ["dry_run", "invocation_id"]
        constraints = [
            models.UniqueConstraint(fields=["dry_run", "invocation_id"], name="dry_run_change_once")
        ]

    def __str__(self):
        return f"#{self.invocation_id} {self.tool}: {self.recorded} → {self.draft}"


class RateCounter(models.Model):
    """Calls of one tool by one caller in one window (the fallback when there is no Redis)."""

    caller = models.CharField(
        max_length=64, help_text="Who calls: agent:<id>, user:<id> or system."
    )
    tool = models.CharField(max_length=200)
    window_start = models.BigIntegerField(help_text="Unix time the window starts.")
    count = models.PositiveIntegerField(default=0)

    objects = AgentRecordQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["caller", "tool", "window_start"], name="rate_counter_caller_unique"
            )
        ]

    def __str__(self):
        return f"{self.caller}/{self.tool}@{self.window_start}: {self.count}"


# --- what the built-in tools work on --------------------------------------------------------------


class TicketStatus(models.TextChoices):
    OPEN = "open", "Open"
    IN_PROGRESS = "in_progress", "In progress"
    RESOLVED = "resolved", "Resolved"
    CLOSED = "closed", "Closed"


class TicketPriority(models.TextChoices):
    P1 = "p1", "P1 – critical"
    P2 = "p2", "P2 – high"
    P3 = "p3", "P3 – medium"
    P4 = "p4", "P4 – low"


class Ticket(models.Model):
    """A small ticket, standing in for an ITSM, that agents create, update and comment on."""

    title = models.CharField(max_length=300)
    description = models.TextField(blank=True)
    status = models.CharField(
        max_length=16, choices=TicketStatus.choices, default=TicketStatus.OPEN
    )
    priority = models.CharField(
        max_length=4, choices=TicketPriority.choices, default=TicketPriority.P3
    )
    service = models.CharField(max_length=100, blank=True, db_index=True)
    classification = models.CharField(max_length=16, default="internal")
    assignee = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_name = models.CharField(max_length=150, blank=True)
    run_id = models.BigIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=300, unique=True, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"#{self.pk} {self.title}"


class TicketComment(models.Model):
    """A comment on a ticket, by a person or an agent."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="comments")
    body = models.TextField()
    author = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    author_name = models.CharField(max_length=150, blank=True)
    run_id = models.BigIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=300, unique=True, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TicketCommentQuerySet.as_manager()

    class Meta:
        ordering = ["ticket", "created_at", "id"]

    def __str__(self):
        return f"Comment on #{self.ticket_id} by {self.author_name}"


class Notification(models.Model):
    """A message to a person's inbox, and where else it was delivered (email, webhook)."""

    recipient = models.ForeignKey(USER, on_delete=models.CASCADE, related_name="notifications")
    subject = models.CharField(max_length=300)
    body = models.TextField(blank=True)
    sent_by = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    sent_by_name = models.CharField(max_length=150, blank=True)
    run_id = models.BigIntegerField(null=True, blank=True)
    deliveries = models.JSONField(
        default=dict, blank=True, help_text="Per channel: delivered, skipped, or the error."
    )
    idempotency_key = models.CharField(max_length=300, unique=True, null=True, blank=True)
    webhook_url = models.URLField(max_length=2000, blank=True, help_text="Where the webhook goes.")
    delivery_attempts = models.PositiveSmallIntegerField(default=0)
    next_delivery_at = models.DateTimeField(
        null=True,
        blank=True,
        db_index=True,
        help_text="When a pending email or webhook is tried next; empty when none is.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"To {self.recipient}: {self.subject}"


# --- shared memory -------------------------------------------------------------------------------


class MemoryScope(models.TextChoices):
    RUN = "run", "One run"
    WORKFLOW = "workflow", "One workflow"
    DOMAIN = "domain", "A named domain"


class Classification(models.TextChoices):
    PUBLIC = "public", "Public"
    INTERNAL = "internal", "Internal"
    CONFIDENTIAL = "confidential", "Confidential"
    RESTRICTED = "restricted", "Restricted"


class MemoryNamespace(models.Model):
    """A governed space of shared memory: its scope, classification, retention and legal hold."""

    slug = models.SlugField(max_length=150, unique=True)
    name = models.CharField(max_length=200)
    scope = models.CharField(max_length=16, choices=MemoryScope.choices)
    run_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    workflow_id = models.BigIntegerField(null=True, blank=True)
    classification = models.CharField(
        max_length=16, choices=Classification.choices, default=Classification.INTERNAL
    )
    retention_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Entries expire this long after their last write."
    )
    legal_hold = models.BooleanField(
        default=False, help_text="While set, nothing here is purged, expired or not."
    )
    legal_hold_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]
        permissions = [
            ("read_memorynamespace", "Can read entries of a memory namespace"),
            ("write_memorynamespace", "Can write entries of a memory namespace"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(scope="run") | Q(run_id__isnull=False), name="memory_run_scope_run"
            ),
            models.CheckConstraint(
                condition=~Q(scope="workflow") | Q(workflow_id__isnull=False),
                name="memory_workflow_scope_workflow",
            ),
        ]

    def __str__(self):
        return self.slug


class MemoryEntry(models.Model):
    """One key of a namespace: its JSON value, its version, and the run and agent that wrote it."""

    namespace = models.ForeignKey(MemoryNamespace, on_delete=models.CASCADE, related_name="entries")
    key = models.CharField(max_length=200)
    value = models.JSONField(null=True)
    version = models.PositiveIntegerField(default=1)
    run_id = models.BigIntegerField(null=True, blank=True)
    step_id = models.CharField(max_length=200, blank=True)
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    agent_name = models.CharField(max_length=100, blank=True)
    written_by = models.ForeignKey(
        USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    written_by_name = models.CharField(max_length=150, blank=True)
    written_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = MemoryEntryQuerySet.as_manager()

    class Meta:
        ordering = ["namespace", "key"]
        verbose_name_plural = "memory entries"
        constraints = [
            models.UniqueConstraint(fields=["namespace", "key"], name="memory_entry_unique")
        ]
        indexes = [
            models.Index(
                fields=["expires_at"],
                name="memory_expiry_idx",
                condition=Q(expires_at__isnull=False),
            )
        ]

    def __str__(self):
        return f"{self.namespace.slug}/{self.key} v{self.version}"


class MemoryValueCopy(models.Model):
    """A memory value held outside its entry, so the value's retention reaches the copy too.

    Either the value itself, held for the conversation of the step that read it (the journal
    and the tool records name this row, never the value), or an audit entry whose body holds
    the value in full (a model call's prompt or response). The purge erases both when the
    value's retention passes: the held value is cleared, the audit body erased.
    """

    namespace = models.ForeignKey(MemoryNamespace, on_delete=models.PROTECT, related_name="copies")
    key = models.CharField(max_length=200)
    version = models.PositiveIntegerField()
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="When the value's retention passes (none: kept)."
    )
    value = models.JSONField(null=True, blank=True, help_text="The held value; NULL once erased.")
    audit_entry_id = models.BigIntegerField(
        null=True, blank=True, help_text="An audit entry whose body holds the value in full."
    )
    run_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    erased_at = models.DateTimeField(null=True, blank=True)

    objects = MemoryValueCopyQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["expires_at"],
                name="memory_copy_expiry_idx",
                condition=Q(erased_at__isnull=True, expires_at__isnull=False),
            )
        ]

    def __str__(self):
        return f"copy of {self.namespace.slug}/{self.key} v{self.version}"


class IncidentUpdate(models.Model):
    """A status update posted by the `incident.post_update` tool, once per idempotency key."""

    incident = models.CharField(max_length=100, db_index=True)
    channel = models.CharField(max_length=100)
    message = models.TextField()
    idempotency_key = models.CharField(
        max_length=300, unique=True, help_text="The tool call's key: a redelivery posts nothing."
    )
    run_id = models.BigIntegerField(null=True, blank=True, help_text="The run that posted it.")
    step_id = models.CharField(max_length=100, blank=True)
    posted_at = models.DateTimeField()

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["-posted_at", "-id"]

    def __str__(self):
        return f"{self.incident} → {self.channel}"
