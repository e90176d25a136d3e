"""Workflows, immutable versions, runs, steps, run history, signals and the effect journal."""

from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from governance.permissions import RestrictedQuerySet, can


class WorkflowVersionQuerySet(RestrictedQuerySet):
    """A workflow's versions: visible to whoever may view the workflow."""

    permission_parent = "workflow"


class RunPartQuerySet(RestrictedQuerySet):
    """A run's steps, events, signals and effects: visible to whoever may view the run."""

    permission_parent = "run"


class Workflow(models.Model):
    """A named, governed workflow; its behaviour lives in its live (approved) version."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True, help_text="Inactive workflows cannot start runs.")
    version_approval_required = models.BooleanField(
        default=True,
        help_text="A new version goes live only once a second person approves it. Only those "
        "who may exempt workflows (governance admins) change this.",
    )
    # Set only when a version is approved (or published where no approval is needed): never
    # from a form, so it is not editable.
    live_version = models.ForeignKey(
        "WorkflowVersion",
        null=True,
        blank=True,
        editable=False,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The approved version new runs start on.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]
        permissions = [
            ("publish_workflow", "Can publish (propose) new versions of workflows"),
            ("exempt_workflow", "Can exempt workflows from the approval of their versions"),
        ]

    def __str__(self):
        return self.name

    def latest_version(self) -> WorkflowVersion | None:
        """Return the newest version, whatever its status (proposed ones included), or None."""
        return self.versions.order_by("-number").first()


class VersionStatus(models.TextChoices):
    PROPOSED = "proposed", "Proposed (waits for approval)"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn (expired, cancelled or superseded)"


class WorkflowVersion(models.Model):
    """One immutable definition of a workflow, proposed then approved; runs are pinned to it."""

    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    digest = models.CharField(max_length=64, help_text="SHA-256 of the canonical definition.")
    note = models.TextField(blank=True)
    published_at = models.DateTimeField(auto_now_add=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    published_by_name = models.CharField(max_length=150, blank=True)
    status = models.CharField(
        max_length=16, choices=VersionStatus.choices, default=VersionStatus.PROPOSED
    )
    base_version = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The live version when this one was proposed: what its diff is against.",
    )
    diff = models.TextField(blank=True, help_text="Unified diff against the base version.")
    approval_request = models.ForeignKey(
        "governance.ApprovalRequest",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The request a second person decides before this version goes live.",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    objects = WorkflowVersionQuerySet.as_manager()

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "number"], name="workflow_version_unique")
        ]

    def __str__(self):
        return f"{self.workflow.slug} v{self.number}"

    def save(self, *args, **kwargs):
        """Refuse to change a version's definition: runs depend on it; only its review moves."""
        update_fields = kwargs.get("update_fields")
        if not self._state.adding and not (update_fields and set(update_fields) <= REVIEW_FIELDS):
            raise ValueError("A published workflow version is immutable; publish a new version.")
        super().save(*args, **kwargs)


# What a version's review changes after it is saved; its definition never changes.
REVIEW_FIELDS = {"status", "approval_request", "decided_at"}


class RunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


RUN_FINISHED = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}


class WorkflowRunQuerySet(RestrictedQuerySet):
    """Runs: seen and operated by their permissions, and by whoever started them.

    The principal that started a run may view and operate it (cancel, pause, resume, retry,
    signal) for as long as it may still start runs of its workflow (`change` on the workflow):
    an integration controls the runs it started, as a Temporal client does, and loses them with
    the workflow grant. Signalling (`signal`, a rule action) is open to anyone who may change the
    run or start runs of its workflow: a signal is input to the workflow, as a start is, and the
    definition decides what it does (reserved names stay refused by the engine).
    """

    rule_actions = frozenset({"signal"})

    def owner_q(self, user, action: str) -> Q | None:
        """The runs `user` started, of workflows they may still change."""
        if action not in ("view", "change"):
            return None
        startable = Workflow.objects.restrict(user, "change").values("pk")
        return Q(started_by=user, workflow__in=startable)

    def rule_rows(self, user, action: str) -> WorkflowRunQuerySet:
        """The runs `user` may signal: those they may change, and those of workflows they may."""
        changeable = self.model._default_manager.all().restrict(user, "change").values("pk")
        startable = Workflow.objects.restrict(user, "change").values("pk")
        return self.filter(Q(pk__in=changeable) | Q(workflow__in=startable))

    def rule_allows(self, user, action: str, run) -> bool:
        """One run: may `user` signal it (rule_rows' rule, asked of this run alone)."""
        return can(user, "change", run) or can(user, "change", run.workflow)


class WorkflowRun(models.Model):
    """One execution of a workflow version, with its input, outcome and who started it."""

    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="runs")
    version = models.ForeignKey(WorkflowVersion, on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.RUNNING)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_by_name = models.CharField(max_length=150, blank=True)
    trigger = models.CharField(
        max_length=50, blank=True, help_text="What started the run: admin, api, command, demo, ..."
    )
    business_key = models.CharField(max_length=200, blank=True, db_index=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    request_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = WorkflowRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "created_at"]),
            # The API's run list pages by (-created_at, -id), filtered or not.
            models.Index(fields=["-created_at", "-id"], name="run_recent_idx"),
        ]

    def __str__(self):
        return f"Run {self.pk} of {self.workflow.slug}"

    @property
    def is_finished(self) -> bool:
        """Tell whether the run has reached a final status."""
        return self.status in RUN_FINISHED


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


STEP_FINISHED = {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
NO_ITEM = -1


class StepRun(models.Model):
    """One step of a run, or one item of a `foreach` step: status, attempts, lease and result."""

    # No index of its own: step_run_unique (run, step_id, item_index) serves lookups by run, and
    # each index is one more write on every status change.
    run = models.ForeignKey(
        WorkflowRun, on_delete=models.CASCADE, related_name="steps", db_index=False
    )
    step_id = models.CharField(max_length=100)
    item_index = models.IntegerField(
        default=NO_ITEM, help_text="Position in a foreach list; -1 for the step itself."
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="items"
    )
    step_type = models.CharField(max_length=50)
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    attempt = models.PositiveIntegerField(default=0)
    item = models.JSONField(null=True, blank=True, help_text="The foreach element this row runs.")
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True, help_text="Not to be run before this.")
    dispatched_at = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=32, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    wake_at = models.DateTimeField(null=True, blank=True, help_text="Timer or wait timeout.")
    wait_signal = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = RunPartQuerySet.as_manager()

    class Meta:
        ordering = ["run", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "step_id", "item_index"], name="step_run_unique")
        ]
        indexes = [
            models.Index(fields=["ready_at"], name="step_ready_idx", condition=Q(status="ready")),
            models.Index(
                fields=["lease_expires_at"], name="step_lease_idx", condition=Q(status="running")
            ),
            models.Index(fields=["wake_at"], name="step_wake_idx", condition=Q(status="waiting")),
        ]

    def __str__(self):
        label = self.step_id if self.item_index == NO_ITEM else f"{self.step_id}[{self.item_index}]"
        return f"{label} of run {self.run_id}"

    @property
    def idempotency_key(self) -> str:
        """Return the key that identifies this step's effect across redeliveries and attempts."""
        return f"run:{self.run_id}:step:{self.step_id}:item:{self.item_index}"


class EventKind(models.TextChoices):
    RUN_STARTED = "run_started", "Run started"
    RUN_SUCCEEDED = "run_succeeded", "Run succeeded"
    RUN_FAILED = "run_failed", "Run failed"
    RUN_CANCELLED = "run_cancelled", "Run cancelled"
    RUN_PAUSED = "run_paused", "Run paused"
    RUN_RESUMED = "run_resumed", "Run resumed"
    STEP_SCHEDULED = "step_scheduled", "Step scheduled"
    STEP_STARTED = "step_started", "Step started"
    STEP_SUCCEEDED = "step_succeeded", "Step succeeded"
    STEP_FAILED = "step_failed", "Step failed"
    STEP_SKIPPED = "step_skipped", "Step skipped"
    STEP_CANCELLED = "step_cancelled", "Step cancelled"
    RETRY_SCHEDULED = "retry_scheduled", "Retry scheduled"
    STEP_RETRIED = "step_retried", "Step retried by hand"
    WAITING = "waiting", "Waiting"
    TIMER_FIRED = "timer_fired", "Timer fired"
    WAIT_TIMED_OUT = "wait_timed_out", "Wait timed out"
    SIGNAL_RECEIVED = "signal_received", "Signal received"
    LEASE_EXPIRED = "lease_expired", "Lease expired"
    FANNED_OUT = "fanned_out", "Fanned out"


class RunEvent(models.Model):
    """An append-only entry of a run's history: enough to reconstruct what happened and when."""

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="events")
    step_run = models.ForeignKey(
        StepRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    step_id = models.CharField(max_length=100, blank=True)
    item_index = models.IntegerField(null=True, blank=True)
    attempt = models.PositiveIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=32, choices=EventKind.choices)
    data = models.JSONField(default=dict, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField()

    objects = RunPartQuerySet.as_manager()

    class Meta:
        ordering = ["run", "id"]

    def __str__(self):
        where = f" {self.step_id}" if self.step_id else ""
        return f"{self.get_kind_display()}{where}"


class RunSignal(models.Model):
    """A named message sent to a run from outside; consumed by the step that waits for it."""

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="signals")
    name = models.CharField(max_length=200)
    payload = models.JSONField(default=dict, blank=True)
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    sent_by_name = models.CharField(max_length=150, blank=True)
    received_at = models.DateTimeField()
    consumed_by = models.ForeignKey(
        StepRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    consumed_at = models.DateTimeField(null=True, blank=True)

    objects = RunPartQuerySet.as_manager()

    class Meta:
        ordering = ["run", "id"]
        indexes = [
            models.Index(
                fields=["run", "name"],
                name="signal_pending_idx",
                condition=Q(consumed_at__isnull=True),
            )
        ]

    def __str__(self):
        return f"{self.name} → run {self.run_id}"


class EffectJournal(models.Model):
    """The recorded result of a side effect, keyed so a redelivered step reuses it."""

    key = models.CharField(max_length=300, unique=True)
    run = models.ForeignKey(
        WorkflowRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="effects"
    )
    step_run = models.ForeignKey(
        StepRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="effects"
    )
    name = models.CharField(max_length=200, help_text="The tool or model called.")
    request = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField()

    objects = RunPartQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.key


class IdempotencyState(models.TextChoices):
    IN_FLIGHT = "in_flight", "In flight"
    DONE = "done", "Done"


class IdempotencyKeyQuerySet(RestrictedQuerySet):
    """Idempotency keys: a principal sees the keys it sent (and the responses kept for them)."""

    def owner_q(self, user, action):
        """The keys `user` sent."""
        return Q(principal=user) if action == "view" else None


class IdempotencyKey(models.Model):
    """An API request's Idempotency-Key, its body's fingerprint and the response to replay."""

    principal = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the canonical body.")
    state = models.CharField(
        max_length=16, choices=IdempotencyState.choices, default=IdempotencyState.IN_FLIGHT
    )
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    response_location = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    objects = IdempotencyKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["principal", "key"], name="idempotency_key_unique")
        ]
        indexes = [models.Index(fields=["expires_at"], name="idempotency_expiry_idx")]

    def __str__(self):
        return f"{self.key} of user {self.principal_id}"


# --- inbound webhooks ----------------------------------------------------------------------------


class InboundAction(models.TextChoices):
    START_RUN = "start_run", "Start a run"
    SEND_SIGNAL = "send_signal", "Send a signal to the run with the business key"


class InboundEndpoint(models.Model):
    """An admin-configured receiver at /api/v1/hooks/<slug>/: its secret, whom it acts as, and
    how a payload maps to starting a run or signalling one.

    `input_mapping` maps each run input field to a JSON pointer into the payload (RFC 6901,
    e.g. {"incident": "/alert/id"}); `business_key_pointer` points at the business key. The
    Standard Webhooks secret (`whsec_...`) is kept Fernet-encrypted with STEWARD_SECRETS_KEY.
    """

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    secret_encrypted = models.TextField(editable=False)
    principal = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The integration the hook acts as: its permissions decide what it may do.",
    )
    action = models.CharField(max_length=16, choices=InboundAction.choices)
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="+")
    input_mapping = models.JSONField(
        default=dict, blank=True, help_text='Run input field → JSON pointer, e.g. {"id": "/a/id"}.'
    )
    business_key_pointer = models.CharField(max_length=300, blank=True)
    business_key_policy = models.CharField(
        max_length=16,
        choices=[("fail", "Fail"), ("use_existing", "Use the open run")],
        default="use_existing",
        help_text="A start whose business key an open run holds: refused (409, the sender "
        "retries) or given that run (a repeated alert joins its open incident).",
    )
    signal_name = models.CharField(max_length=100, blank=True)
    signal_payload_pointer = models.CharField(
        max_length=300, blank=True, help_text="What the signal carries (empty: the whole payload)."
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords(excluded_fields=["secret_encrypted"])

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return f"{self.name} ({self.slug})"


class InboundHookQuerySet(RestrictedQuerySet):
    """Received webhooks: seen with their endpoint."""

    permission_parent = "endpoint"


class InboundHook(models.Model):
    """A webhook an endpoint accepted: its `webhook-id` (accepted once) and what it did."""

    endpoint = models.ForeignKey(InboundEndpoint, on_delete=models.CASCADE, related_name="hooks")
    webhook_id = models.CharField(max_length=200)
    received_at = models.DateTimeField()
    business_key = models.CharField(max_length=500, blank=True)
    run_id = models.BigIntegerField(null=True, blank=True)
    signal_id = models.BigIntegerField(null=True, blank=True)

    objects = InboundHookQuerySet.as_manager()

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "webhook_id"], name="inbound_hook_once")
        ]
        indexes = [models.Index(fields=["received_at"], name="inbound_hook_received")]

    def __str__(self):
        return f"{self.endpoint_id}:{self.webhook_id}"


class KpiQuerySet(RestrictedQuerySet):
    """KPI rollups: seen with the workflow they measure."""

    permission_parent = "workflow"


class EngineCounter(models.Model):
    """A running total the engine keeps in the database (the sweeper's repairs), for /metrics."""

    name = models.CharField(max_length=64, unique=True)
    value = models.BigIntegerField(default=0)

    objects = RestrictedQuerySet.as_manager()

    def __str__(self):
        return f"{self.name} = {self.value}"


# --- KPI rollups (docs/kpis.md) -------------------------------------------------------------------
# Kept up to date in the engine's own transactions (orchestrator/kpis.py) and rebuilt in full by
# `manage.py rebuild_kpis`. Days are UTC dates; a run counts as started on its start's day and as
# ended (with its duration and its steps' outcomes) on its end's day.


class KpiDay(models.Model):
    """Runs of one workflow on one day: started, and ended by outcome with their total duration."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    started = models.IntegerField(default=0)
    succeeded = models.IntegerField(default=0)
    failed = models.IntegerField(default=0)
    cancelled = models.IntegerField(default=0)
    duration_seconds = models.FloatField(default=0.0, help_text="Sum over the runs that ended.")
    escalated = models.IntegerField(default=0, help_text="Runs that ended with an escalation.")
    by_human = models.IntegerField(
        default=0, help_text="Runs that ended after a person acted: an escalation or an approval."
    )

    objects = KpiQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workflow", "day"], name="kpi_day_unique"),
        ]
        indexes = [models.Index(fields=["day"], name="kpi_day_day_idx")]

    def __str__(self):
        return f"{self.workflow_id} on {self.day}"


class KpiRunEnd(models.Model):
    """How one ended run counts: its end, outcome, duration and steps (exact percentiles, undo)."""

    run = models.OneToOneField(
        WorkflowRun, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=RunStatus.choices)
    finished_at = models.DateTimeField()
    day = models.DateField(help_text="The UTC day of its end (the duration histogram's day).")
    duration_seconds = models.FloatField()
    steps = models.JSONField(
        default=dict, help_text="{step_id: [finished, failed, {error type: count}]} it added."
    )
    escalation_reasons = models.JSONField(
        default=list, help_text="The reasons of its escalations, each once, sorted."
    )
    approvals = models.IntegerField(default=0, help_text="Approval requests it made.")

    objects = KpiQuerySet.as_manager()

    class Meta:
        indexes = [
            # A percentile's value is read from one bucket of one day (or of a period's days,
            # `day = ANY(...)`), in duration order, from this index alone.
            models.Index(
                fields=["day", "duration_seconds", "workflow"], name="kpi_run_end_day_dur_idx"
            ),
            models.Index(fields=["finished_at"], name="kpi_run_end_idx"),
        ]

    def __str__(self):
        return f"run {self.run_id} {self.status} at {self.finished_at}"


class KpiDurationDay(models.Model):
    """How many runs of one workflow that ended on one day took a duration in one bucket.

    The buckets are orchestrator.kpis.DURATION_BOUNDS. The page finds the bucket holding a
    percentile's rank from these counts, then reads that bucket's durations alone (KpiRunEnd):
    the percentile is exact, and what it reads does not grow with the runs of the period.
    """

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    bucket = models.SmallIntegerField()
    count = models.IntegerField(default=0)

    objects = KpiQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "day", "bucket"], name="kpi_duration_day_unique"
            ),
        ]

    def __str__(self):
        return f"{self.workflow_id} on {self.day}: bucket {self.bucket}"


class KpiStepDay(models.Model):
    """One step of one workflow's runs that ended on one day: how often it finished, and failed."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    step_id = models.CharField(max_length=100)
    finished = models.IntegerField(default=0)
    failed = models.IntegerField(default=0)

    objects = KpiQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "day", "step_id"], name="kpi_step_day_unique"
            ),
        ]
        indexes = [models.Index(fields=["day"], name="kpi_step_day_idx")]

    def __str__(self):
        return f"{self.step_id} of {self.workflow_id} on {self.day}"


class KpiStepErrorDay(models.Model):
    """Failures of one step by error type, for the runs of a workflow that ended on one day."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    step_id = models.CharField(max_length=100)
    error_type = models.CharField(max_length=100)
    count = models.IntegerField(default=0)

    objects = KpiQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "day", "step_id", "error_type"], name="kpi_step_error_unique"
            ),
        ]
        indexes = [models.Index(fields=["day"], name="kpi_step_error_day_idx")]

    def __str__(self):
        return f"{self.error_type} in {self.step_id} of {self.workflow_id} on {self.day}"


class KpiEscalationDay(models.Model):
    """Escalations to people opened for one workflow's runs on one day, by reason."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    reason = models.CharField(max_length=32)
    count = models.IntegerField(default=0, help_text="Escalations opened that day.")
    runs = models.IntegerField(
        default=0, help_text="Runs that ended that day with at least one escalation for it."
    )

    objects = KpiQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "day", "reason"], name="kpi_escalation_day_unique"
            ),
        ]
        indexes = [models.Index(fields=["day"], name="kpi_escalation_day_idx")]

    def __str__(self):
        return f"{self.count} {self.reason} of {self.workflow_id} on {self.day}"


class KpiApproval(models.Model):
    """One approval request of a run that reached its final state: how long it took, and the SLA."""

    request_id = models.BigIntegerField(primary_key=True)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=20)
    role_name = models.CharField(max_length=150, blank=True)
    decided_at = models.DateTimeField(help_text="When it reached its final state.")
    latency_seconds = models.FloatField(help_text="From the request to its final state.")
    breached = models.BooleanField(help_text="It ended after its first level's SLA.")
    approver_name = models.CharField(
        max_length=150, blank=True, help_text="Who made the decision that ended it."
    )
    seen_at = models.DateTimeField(
        null=True, help_text="When an eligible approver first opened it (else its first decision)."
    )
    wait_seconds = models.FloatField(null=True, help_text="From the request to being seen.")
    decide_seconds = models.FloatField(null=True, help_text="From being seen to its final state.")

    objects = KpiQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["workflow", "decided_at"], name="kpi_approval_wf_idx"),
            models.Index(fields=["decided_at"], name="kpi_approval_idx"),
        ]

    def __str__(self):
        return f"approval {self.request_id} {self.status}"


class KpiAck(models.Model):
    """When a run was acknowledged: the first time the step or signal its workflow declares."""

    run = models.OneToOneField(
        WorkflowRun, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    acknowledged_at = models.DateTimeField()
    seconds = models.FloatField(help_text="From the run's start to its acknowledgement.")

    objects = KpiQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["workflow", "acknowledged_at"], name="kpi_ack_wf_idx"),
        ]

    def __str__(self):
        return f"run {self.run_id} acknowledged after {self.seconds:.0f} s"


class KpiAgentDay(models.Model):
    """What one agent (or the tool steps, agent '') did in one workflow's runs on one day."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    agent_slug = models.CharField(max_length=100, blank=True)
    model_calls = models.IntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=8, default=0)
    tool_calls = models.IntegerField(default=0)
    denied = models.IntegerField(default=0, help_text="Tool calls denied by policy.")
    approvals = models.IntegerField(default=0, help_text="Tool calls that asked for an approval.")
    escalated = models.IntegerField(default=0, help_text="Tool calls escalated to a person.")

    objects = KpiQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "day", "agent_slug"], name="kpi_agent_day_unique"
            ),
        ]
        indexes = [models.Index(fields=["day"], name="kpi_agent_day_idx")]

    def __str__(self):
        return f"{self.agent_slug or 'tool steps'} in {self.workflow_id} on {self.day}"


class ManualBaseline(models.Model):
    """A workflow's figures before orchestration, as a governance admin declares them."""

    workflow = models.OneToOneField(
        Workflow, on_delete=models.CASCADE, related_name="manual_baseline"
    )
    ack_seconds = models.PositiveIntegerField(
        help_text="Time to acknowledge when people did it by hand (seconds)."
    )
    target_ack_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="The time to acknowledge orchestration should beat."
    )
    manual_runs_per_week = models.PositiveIntegerField(
        null=True, blank=True, help_text="Cases people handled by hand each week."
    )
    source = models.TextField(help_text="Where the figures come from (a study, an ITSM export).")
    history = HistoricalRecords()

    # Declared by governance admins (model permissions), read by whoever may read baselines.
    objects = RestrictedQuerySet.as_manager()

    def __str__(self):
        return f"manual baseline of {self.workflow}"


# --- the run inspector ---------------------------------------------------------------------------


class SavedRunViewQuerySet(RestrictedQuerySet):
    """Saved views of the runs list: each person sees and changes their own only."""

    def owner_q(self, user, action):
        """The views `user` saved."""
        return Q(owner=user)


class SavedRunView(models.Model):
    """A person's named filter of the runs list (the list's query string), to open again."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="saved_run_views"
    )
    name = models.CharField(max_length=100)
    query = models.CharField(max_length=2000, blank=True, help_text="The list's query string.")
    created_at = models.DateTimeField()

    objects = SavedRunViewQuerySet.as_manager()

    class Meta:
        ordering = ["owner", "name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="saved_run_view_unique")
        ]

    def __str__(self):
        return f"{self.name} ({self.owner_id})"
