"""What the audit pages read: one entry with its body and proof checked, and the trail's health.

Reads only (the API's entry endpoint and the web pages share these). An entry's proof is
checked here, not only built: the entry is hashed again into its leaf, the leaf is compared with
the stored one, the inclusion proof is verified against the root of the newest checkpoint that
covers it, and that checkpoint's signature against the configured key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from audit import clock, keys, proofs
from audit.leaves import entry_leaf_hash, entry_row, leaf_dict
from audit.merkle import verify_inclusion
from audit.models import (
    AuditBody,
    AuditCheckpoint,
    AuditEntry,
    AuditTreeState,
    AuditVerification,
)
from audit.verification import check_checkpoint_signature

LAG_COUNT_LIMIT = 10_000


def leaf_of(entry: AuditEntry):
    """Return the entry's leaf, or None while it is not sequenced."""
    try:
        return entry.leaf
    except AuditEntry.leaf.RelatedObjectDoesNotExist:
        return None


def body_of(entry: AuditEntry) -> AuditBody | None:
    """Return the entry's body row, or None for an entry without a body."""
    try:
        return entry.body_row
    except AuditEntry.body_row.RelatedObjectDoesNotExist:
        return None


def erasure(body: AuditBody) -> dict:
    """Return when, why and by which entry a body was erased."""
    erased_by = AuditBody.objects.filter(entry_id=body.erasure_entry_id).first()
    reason = ""
    if erased_by is not None and erased_by.content:
        reason = json.loads(erased_by.content).get("reason", "")
    return {
        "erased_at": body.erased_at,
        "erasure_entry_id": body.erasure_entry_id,
        "reason": reason,
    }


def body_content(entry: AuditEntry) -> tuple[Any, dict | None]:
    """Return an entry's body (None when it has none or it was erased) and its erasure."""
    body = body_of(entry)
    if body is None:
        return None, None
    if body.content is None:
        return None, erasure(body)
    return json.loads(body.content), None


@dataclass(frozen=True)
class ProofCheck:
    """What the entry page says of an entry's place in the signed log."""

    state: str  # verified, failed, pending (not sequenced), not_covered (no checkpoint yet)
    message: str
    seq: int | None = None
    checkpoint: AuditCheckpoint | None = None
    proof: tuple[str, ...] = ()
    leaf_hash: str = ""


def check_entry(entry: AuditEntry, checkpoint: AuditCheckpoint | None) -> ProofCheck:
    """Check an entry's leaf, its inclusion proof and the covering checkpoint's signature."""
    leaf = leaf_of(entry)
    if leaf is None:
        return ProofCheck("pending", "Not sequenced yet: the sequencer numbers it shortly.")
    stored = bytes(leaf.leaf_hash)
    if checkpoint is None or leaf.seq >= checkpoint.tree_size:
        return ProofCheck(
            "not_covered",
            f"Sequenced as seq {leaf.seq}; no signed checkpoint covers it yet (pending).",
            seq=leaf.seq,
            leaf_hash=stored.hex(),
        )
    recomputed = entry_leaf_hash(leaf.seq, entry_row(entry))
    if recomputed != stored:
        return ProofCheck(
            "failed",
            f"The entry does not hash to the leaf stored for seq {leaf.seq}: it was changed.",
            seq=leaf.seq,
            checkpoint=checkpoint,
            leaf_hash=stored.hex(),
        )
    why_not_signed = check_checkpoint_signature(checkpoint.as_dict(), keys.public_key())
    try:
        proof = proofs.inclusion(leaf.seq, checkpoint)
    except proofs.ProofUnavailable as exc:
        return ProofCheck("failed", str(exc), seq=leaf.seq, checkpoint=checkpoint)
    hexes = tuple(step.hex() for step in proof)
    root = bytes.fromhex(checkpoint.root_hash)
    if not verify_inclusion(recomputed, leaf.seq, checkpoint.tree_size, proof, root):
        return ProofCheck(
            "failed",
            f"The inclusion proof of seq {leaf.seq} does not reach the root of checkpoint "
            f"#{checkpoint.pk}.",
            seq=leaf.seq,
            checkpoint=checkpoint,
            proof=hexes,
            leaf_hash=stored.hex(),
        )
    if why_not_signed is not None:
        return ProofCheck(
            "failed",
            f"Checkpoint #{checkpoint.pk}'s signature does not verify: {why_not_signed}.",
            seq=leaf.seq,
            checkpoint=checkpoint,
            proof=hexes,
            leaf_hash=stored.hex(),
        )
    return ProofCheck(
        "verified",
        f"Seq {leaf.seq} is in the tree of checkpoint #{checkpoint.pk} (size "
        f"{checkpoint.tree_size}): the entry hashes to its leaf, the inclusion proof reaches the "
        "signed root, and the signature verifies.",
        seq=leaf.seq,
        checkpoint=checkpoint,
        proof=hexes,
        leaf_hash=stored.hex(),
    )


def entry_page(entry: AuditEntry, checkpoint: AuditCheckpoint | None) -> dict[str, Any]:
    """Return what an entry's page shows: the entry, its body or erasure, its leaf and proof."""
    body, erased = body_content(entry)
    leaf = leaf_of(entry)
    return {
        "entry": entry,
        "body": json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False)
        if body is not None
        else "",
        "has_body": body_of(entry) is not None,
        "erased": erased,
        "leaf": leaf_dict(leaf.seq, entry_row(entry)) if leaf is not None else None,
        "check": check_entry(entry, checkpoint),
    }


def health(user) -> dict[str, Any]:
    """Return the trail's health as `user` may read it: last checkpoint and its signature,
    sequencer lag, last full verification and its result."""
    now = clock.now()
    checkpoint = AuditCheckpoint.objects.restrict(user, "view").order_by("-id").first()
    signature = None
    if checkpoint is not None:
        signature = check_checkpoint_signature(checkpoint.as_dict(), keys.public_key())
    state = AuditTreeState.objects.restrict(user, "view").filter(pk=1).first()
    # The lag is counted from the sequencer's cursor also for a reader who may not view the
    # tree state (the count is of entries they may read): from 0, it scanned the whole trail
    # on every report page (over 10,000,000 entries, bench/web.py).
    cursor = AuditTreeState.objects.filter(pk=1).values_list("cursor_id", flat=True).first() or 0
    behind = AuditEntry.objects.restrict(user, "view").filter(id__gt=cursor, leaf__isnull=True)
    waiting = behind.order_by("id").values_list("created_at", flat=True).first()
    verification = AuditVerification.objects.restrict(user, "view").order_by("-id").first()
    return {
        "checkpoint": checkpoint,
        "signature_ok": checkpoint is not None and signature is None,
        "signature_problem": signature or "",
        "tree_size": state.size if state is not None else None,
        "sequenced_at": state.updated_at if state is not None else None,
        "unsequenced": behind[:LAG_COUNT_LIMIT].count() if waiting is not None else 0,
        "lag_seconds": round((now - waiting).total_seconds(), 1) if waiting else 0.0,
        "verification": verification,
    }
