"""The audit trail: append-only entries, their erasable bodies, the Merkle leaves, the tree's
stored nodes and checkpoints.

Entries, leaves, nodes and checkpoints are never changed once written; on PostgreSQL triggers
created in migrations 0002 and 0007 refuse UPDATE, DELETE and TRUNCATE on them. A body may only
be erased (its content set to NULL with an erasure marker), which leaves every proof valid
because the leaf commits to the body's digest, not to the body itself. Nothing here holds a
foreign key to another app: the actor and the target are copied, so an entry outlives what it
describes.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class AuditQuerySet(models.QuerySet):
    """Audit rows, narrowed to a reader: the trail is read whole or not at all.

    Governance's restrict() cannot be imported here (audit is the lowest layer), so this is the
    same rule for the one case audit has: a model-wide permission (`audit.view_auditentry`, given
    through a role) or a superuser sees every row, anyone else none. No object permissions:
    an entry copies the names of whoever acted, so it is not shown to whoever may see its run
    (docs/audit.md). Bodies and leaves follow their entry (`permission_parent`).
    """

    permission_parent: str | None = None

    def restrict(self, user, action: str = "view") -> AuditQuerySet:
        """Return every row to a holder of the model-wide permission, none to anyone else."""
        usable = user is not None and user.is_authenticated and user.is_active
        if not usable:
            return self.none()
        model = self.model
        if self.permission_parent:
            model = model._meta.get_field(self.permission_parent).related_model
        opts = model._meta
        if user.is_superuser or user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}"):
            return self
        return self.none()


class AuditPartQuerySet(AuditQuerySet):
    """An entry's body or leaf: readable by whoever may read the entry."""

    permission_parent = "entry"


class ActorKind(models.TextChoices):
    USER = "user", "User"
    AGENT = "agent", "Agent"
    SYSTEM = "system", "System"


class AuditEntry(models.Model):
    """One recorded action: when, who, what, on which target, under which decision."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    actor_name = models.CharField(max_length=150, blank=True)
    actor_kind = models.CharField(max_length=16, choices=ActorKind.choices)
    action = models.CharField(max_length=100)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    run_id = models.CharField(max_length=64, blank=True)
    step_id = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    decision = models.TextField(
        null=True,
        blank=True,
        help_text="Canonical JSON of the permission or policy decision (text, so that it reads "
        "back byte for byte as it was hashed).",
    )
    body_digest = models.CharField(
        max_length=64, blank=True, help_text="SHA-256 of the canonical body; empty without a body."
    )

    objects = AuditQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "audit entries"
        indexes = [
            # One index for both exact actions and prefixes ("approval.*"): a pattern-matching
            # btree also serves equality, so db_index's second, plain index would only slow
            # every append.
            models.Index(
                fields=["action"], name="audit_action_idx", opclasses=["varchar_pattern_ops"]
            ),
            models.Index(fields=["target_type", "target_id"], name="audit_target_idx"),
            # A plain index: runs are looked up by their exact id, never by prefix (a CharField's
            # db_index would add a second, pattern-matching index to every append).
            models.Index(fields=["run_id"], name="audit_run_idx"),
        ]

    def __str__(self):
        return f"#{self.pk} {self.action} by {self.actor_name or self.actor_kind}"


class AuditBody(models.Model):
    """The JSON body of an entry, stored apart as canonical JSON text so it can be erased."""

    # No foreign key constraint in the database, here and on the leaf (migration 0005 says why:
    # its check writes a lock into every entry's row, for a reference that cannot dangle).
    entry = models.OneToOneField(
        AuditEntry,
        primary_key=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="body_row",
    )
    content = models.TextField(null=True, help_text="Canonical JSON; NULL once erased.")
    erased_at = models.DateTimeField(null=True, blank=True)
    erasure_entry_id = models.BigIntegerField(
        null=True, blank=True, help_text="The entry that records the erasure."
    )

    objects = AuditPartQuerySet.as_manager()

    def __str__(self):
        return f"body of #{self.entry_id}"


class AuditLeaf(models.Model):
    """The sequence number the sequencer gave an entry and the Merkle leaf hash it committed to."""

    seq = models.BigIntegerField(primary_key=True, help_text="0-based index in the Merkle tree.")
    entry = models.OneToOneField(
        AuditEntry, on_delete=models.DO_NOTHING, db_constraint=False, related_name="leaf"
    )
    leaf_hash = models.BinaryField(max_length=32)
    sequenced_at = models.DateTimeField(default=timezone.now)

    objects = AuditPartQuerySet.as_manager()

    def __str__(self):
        return f"seq {self.seq} → #{self.entry_id}"


class AuditNode(models.Model):
    """The hash of one perfect subtree of the Merkle tree: 2**level leaves from position * 2**level.

    Written by the sequencer, in the transaction of the leaf that completes the subtree, for
    every level >= audit.nodes.MIN_LEVEL; a proof reads O(log n) of them (audit/nodes.py).
    """

    pk = models.CompositePrimaryKey("level", "position")
    level = models.PositiveSmallIntegerField()
    position = models.BigIntegerField(help_text="Index of the subtree among those of its level.")
    hash = models.BinaryField(max_length=32)

    objects = AuditQuerySet.as_manager()

    def __str__(self):
        return f"node {self.level}/{self.position}"


class AuditTreeState(models.Model):
    """The sequencer's incremental state (one row): tree size, Merkle frontier and commit cursor."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    size = models.BigIntegerField(default=0)
    frontier = models.JSONField(default=list, help_text="Saved state of the Merkle frontier.")
    root_hash = models.CharField(max_length=64, blank=True)
    cursor_txid = models.BigIntegerField(
        default=0, help_text="PostgreSQL: (txid, id) of the last sequenced entry."
    )
    cursor_id = models.BigIntegerField(default=0)
    nodes_size = models.BigIntegerField(
        default=0,
        help_text="Every perfect subtree within the first nodes_size leaves is stored "
        "(AuditNode); below size while an older trail's nodes are filled in.",
    )
    updated_at = models.DateTimeField(default=timezone.now)

    objects = AuditQuerySet.as_manager()

    def __str__(self):
        return f"tree of {self.size} leaves"


class AuditCheckpoint(models.Model):
    """A signed statement of the tree size and root hash at a moment; published, never changed."""

    tree_size = models.BigIntegerField()
    root_hash = models.CharField(max_length=64)
    timestamp = models.CharField(max_length=40, help_text="UTC time the checkpoint was signed.")
    key_id = models.CharField(max_length=64)
    signature = models.CharField(max_length=128, help_text="Ed25519 signature, base64.")
    created_at = models.DateTimeField(default=timezone.now)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"checkpoint #{self.pk}: {self.tree_size} entries"

    def as_dict(self) -> dict:
        """Return the checkpoint in the form written to evidence bundles and checkpoint files."""
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "timestamp": self.timestamp,
            "key_id": self.key_id,
            "signature": self.signature,
        }


class AuditVerification(models.Model):
    """One full verification of the trail (`audit_verify`): when, what it checked, its result.

    Kept beside the log, not in it: writing an entry would change the log being verified.
    """

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    ok = models.BooleanField()
    size = models.BigIntegerField(default=0, help_text="Entries checked.")
    checkpoints = models.PositiveIntegerField(default=0)
    external = models.PositiveIntegerField(default=0, help_text="Checkpoints kept outside.")
    erased = models.BigIntegerField(default=0)
    pending = models.BigIntegerField(default=0)
    root_hash = models.CharField(max_length=64, blank=True)
    failures = models.JSONField(default=list, blank=True, help_text="The first failures found.")

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"verification #{self.pk}: {'OK' if self.ok else 'FAILED'}"
