"""The audit trail's API: thin readers over AuditEntry.objects.restrict() and audit/proofs.py.

The trail is read whole or not at all (audit/models.py): a holder of `audit.view_auditentry`
reads every entry, anyone else none, so a list is empty for them and one entry is 404 (the
refusal audited as `governance.access_denied`). Checkpoints follow their own model permission,
`audit.view_auditcheckpoint`, as in the admin. Nothing here writes to the trail but refusals.
"""

from __future__ import annotations

import json

from django.db.models import F
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, generics
from rest_framework.filters import OrderingFilter
from rest_framework.response import Response
from rest_framework.views import APIView

from audit import proofs
from audit import services as audit
from audit.api import serializers as s
from audit.api.pagination import CursorPagination
from audit.api.schema import problems
from audit.export import ExportError, build_bundle
from audit.filters import MAX_SEQ, AuditEntryFilter
from audit.leaves import entry_row, leaf_dict
from audit.models import AuditCheckpoint, AuditEntry
from audit.reading import body_of, erasure, leaf_of

TAG = ["audit"]


class LogUnavailable(exceptions.APIException):
    """The stored log cannot give the proof: it is not what was signed, or not signed yet."""

    status_code = 409
    default_detail = "The log cannot prove this now."
    problem_type = "audit/unprovable"


class SeqCursorPagination(CursorPagination):
    """Pages of the trail by sequence number: gap-free and final, so a tail never misses one."""

    ordering = "seq"
    page_size_query_param = "page_size"
    max_page_size = 500


def _refuse(request, model, object_id) -> exceptions.NotFound:
    """Return the 404 for an object the caller may not see, auditing it when it was a refusal.

    The trail is read whole or not at all, so a caller restrict() gives nothing of the model
    was refused (audited); a reader of it asked for what is not there (not audited).
    """
    opts = model._meta
    label = f"{opts.verbose_name} {object_id}".strip()
    if model.objects.restrict(request.user, "view").query.is_empty():
        permission = f"{opts.app_label}.view_{opts.model_name}"
        audit.record(
            action="governance.access_denied",
            actor=request.user,
            target_type=opts.label_lower,
            target_id=str(object_id),
            body={
                "action": "view",
                "permission": permission,
                "outcome": "not_found",
                "detail": f"reading the audit trail needs {permission}",
            },
        )
    return exceptions.NotFound(f"No {label} is visible to you.")


def _visible_checkpoints(request):
    """Return the checkpoints the caller may read."""
    return AuditCheckpoint.objects.restrict(request.user, "view").order_by("-id")


def _checkpoint(request, pk) -> AuditCheckpoint:
    """Return one checkpoint the caller may read, or raise the 404."""
    checkpoint = _visible_checkpoints(request).filter(pk=pk).first() if pk <= MAX_SEQ else None
    if checkpoint is None:
        raise _refuse(request, AuditCheckpoint, pk)
    return checkpoint


class EntryListView(generics.ListAPIView):
    """The sequenced entries, filtered as the report page filters, a cursor page at a time."""

    serializer_class = s.EntrySerializer
    pagination_class = SeqCursorPagination
    filter_backends = [DjangoFilterBackend, OrderingFilter]
    filterset_class = AuditEntryFilter
    ordering_fields = ["seq"]
    ordering = ["seq"]

    def get_queryset(self):
        """Return the sequenced entries the caller may read, with their sequence numbers."""
        return (
            AuditEntry.objects.restrict(self.request.user, "view")
            .filter(leaf__isnull=False)
            .annotate(seq=F("leaf__seq"))
        )

    @extend_schema(
        tags=TAG,
        summary="List audit entries",
        description="Entries in sequence order (`ordering=-seq` for newest first), filtered as "
        "the report page filters. Only sequenced entries are listed (the sequencer numbers an "
        "entry within about a second of its commit); resume a tail with `seq_min`. Empty for a "
        "caller without `audit.view_auditentry`.",
        responses={200: s.EntrySerializer(many=True), **problems(400)},
    )
    def get(self, request, *args, **kwargs):
        """Return a page of entries."""
        return super().get(request, *args, **kwargs)


class EntryDetailView(APIView):
    """One entry with its body, its sequence number and its inclusion proof."""

    @extend_schema(
        tags=TAG,
        summary="Read an audit entry with its proof",
        description="The entry, its body (or when and why it was erased), its Merkle leaf, and "
        "the inclusion proof in the signed checkpoint that covers it (the newest, or the one "
        "named by `checkpoint`). While no checkpoint covers it, `covered` is false and "
        "`status` says why.",
        parameters=[s.EntryProofQuerySerializer],
        responses={200: s.EntryProofSerializer, **problems(400, 404, 409)},
    )
    def get(self, request, pk: int):
        """Return the entry and its proof."""
        query = s.EntryProofQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        entry = None
        if pk <= MAX_SEQ:
            entry = (
                AuditEntry.objects.restrict(request.user, "view")
                .select_related("leaf", "body_row")
                .filter(pk=pk)
                .first()
            )
        if entry is None:
            raise _refuse(request, AuditEntry, pk)
        wanted = query.validated_data.get("checkpoint")
        if wanted:
            checkpoint = _checkpoint(request, wanted)
        else:
            checkpoint = _visible_checkpoints(request).first()
        return Response(s.EntryProofSerializer(_with_proof(entry, checkpoint)).data)


def _with_proof(entry: AuditEntry, checkpoint: AuditCheckpoint | None) -> dict:
    """Return an entry with its body and its proof against `checkpoint` (when that covers it)."""
    leaf = leaf_of(entry)
    body = body_of(entry)
    covered = leaf is not None and checkpoint is not None and leaf.seq < checkpoint.tree_size
    data = {name: getattr(entry, name) for name in s.EntrySerializer.Meta.fields if name != "seq"}
    data.update(
        seq=leaf.seq if leaf is not None else None,
        body=json.loads(body.content) if body is not None and body.content else None,
        erased=erasure(body) if body is not None and body.content is None else None,
        leaf=leaf_dict(leaf.seq, entry_row(entry)) if leaf is not None else None,
        leaf_hash=bytes(leaf.leaf_hash).hex() if leaf is not None else None,
        covered=covered,
        status="covered" if covered else ("sequenced" if leaf is not None else "pending"),
        checkpoint=checkpoint if covered else None,
        inclusion_proof=None,
    )
    if covered:
        try:
            data["inclusion_proof"] = proofs.inclusion(leaf.seq, checkpoint)
        except proofs.ProofUnavailable as exc:
            raise LogUnavailable(str(exc)) from None
    return data


class LatestCheckpointView(APIView):
    """The newest signed checkpoint."""

    @extend_schema(
        tags=TAG,
        summary="Read the latest checkpoint",
        description="The newest signed checkpoint (404 while there is none, or for a caller "
        "without `audit.view_auditcheckpoint`).",
        responses={200: s.CheckpointSerializer, **problems(404)},
    )
    def get(self, request):
        """Return the newest checkpoint."""
        checkpoint = _visible_checkpoints(request).first()
        if checkpoint is None:
            raise _refuse(request, AuditCheckpoint, "latest")
        return Response(s.CheckpointSerializer(checkpoint).data)


class CheckpointDetailView(APIView):
    """One signed checkpoint."""

    @extend_schema(
        tags=TAG,
        summary="Read a checkpoint",
        responses={200: s.CheckpointSerializer, **problems(404)},
    )
    def get(self, request, pk: int):
        """Return the checkpoint."""
        return Response(s.CheckpointSerializer(_checkpoint(request, pk)).data)


class ConsistencyView(APIView):
    """The proof that a newer checkpoint's tree extends an older one's."""

    @extend_schema(
        tags=TAG,
        summary="Prove one checkpoint extends another",
        description="A consistency proof (RFC 9162 2.1.4) from the older checkpoint (`from`, an "
        "id, or `from_size`, the tree size a kept checkpoint carries) to the newer one (`to`, "
        "the newest when absent): nothing the older one signed was changed, removed or "
        "reordered since.",
        parameters=[s.ConsistencyQuerySerializer],
        responses={200: s.ConsistencySerializer, **problems(400, 404, 409)},
    )
    def get(self, request):
        """Return both checkpoints and the proof."""
        query = s.ConsistencyQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        wanted = query.validated_data
        if "to" in wanted:
            new = _checkpoint(request, wanted["to"])
        else:
            new = _visible_checkpoints(request).first()
            if new is None:
                raise _refuse(request, AuditCheckpoint, "latest")
        if "from" in wanted:
            old = _checkpoint(request, wanted["from"])
        else:
            size = wanted["from_size"]
            old = _visible_checkpoints(request).filter(tree_size=size).order_by("id").first()
            if old is None:
                raise _refuse(request, AuditCheckpoint, f"of size {size}")
        if old.tree_size > new.tree_size:
            raise exceptions.ValidationError(
                {"from": [f"Checkpoint #{old.pk} is larger than checkpoint #{new.pk}."]}
            )
        try:
            proof = proofs.consistency(old, new)
        except proofs.ProofUnavailable as exc:
            raise LogUnavailable(str(exc)) from None
        data = {"old_checkpoint": old, "new_checkpoint": new, "proof": proof}
        return Response(s.ConsistencySerializer(data).data)


class EvidenceView(APIView):
    """The evidence bundle of a run's entries, checkable offline."""

    @extend_schema(
        tags=TAG,
        summary="Download a run's evidence bundle",
        description="A `steward-evidence/1` bundle of every entry of the run that the newest "
        "checkpoint covers, with their bodies and inclusion proofs; check it offline with "
        "`scripts/verify_evidence.py`. Entries no checkpoint covers yet are named in "
        "`not_covered`. 404 for a run with no entries visible to the caller.",
        parameters=[s.EvidenceQuerySerializer],
        responses={200: s.EvidenceBundleSerializer, **problems(400, 404, 409)},
    )
    def get(self, request):
        """Return the bundle as a JSON attachment."""
        query = s.EvidenceQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return evidence_response(request, query.validated_data["run"])


def evidence_response(request, run: str) -> Response:
    """Answer the evidence bundle of a run's entries the caller may see (404 when none)."""
    rows = list(
        AuditEntry.objects.restrict(request.user, "view")
        .filter(run_id=run)
        .values_list("id", "leaf__seq")
    )
    if not rows:
        raise _refuse(request, AuditEntry, f"of run {run}")
    checkpoint = _visible_checkpoints(request).first()
    if checkpoint is None:
        raise LogUnavailable("No signed checkpoint covers this run's entries yet.")
    seqs = [seq for _, seq in rows if seq is not None and seq < checkpoint.tree_size]
    not_covered = sorted(pk for pk, seq in rows if seq is None or seq >= checkpoint.tree_size)
    try:
        bundle = build_bundle(seqs, checkpoint=checkpoint)
    except ExportError as exc:
        raise LogUnavailable(str(exc)) from None
    bundle["not_covered"] = not_covered
    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in run)
    response = Response(bundle)
    response["Content-Disposition"] = f'attachment; filename="evidence-run-{safe_run}.json"'
    return response
