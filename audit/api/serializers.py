"""What the audit API shows: entries as they were recorded, their proofs, checkpoints, bundles."""

from __future__ import annotations

import base64
import json

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from audit import keys
from audit.evidence import key_id_for
from audit.filters import MAX_SEQ
from audit.models import ActorKind, AuditCheckpoint, AuditEntry
from audit.queries import EXPORT_FIELDS

HEX_HASH = r"^[0-9a-f]{64}$"


class HashListField(serializers.ListField):
    """A Merkle proof: hashes as 64 lowercase hex digits, nearest the leaf (or old root) first."""

    child = serializers.RegexField(HEX_HASH)

    def to_representation(self, data):
        """Write each hash as hex."""
        return [node.hex() if isinstance(node, bytes | bytearray) else node for node in data]


@extend_schema_field(
    {"type": "object", "additionalProperties": True, "nullable": True},
)
class DecisionField(serializers.Field):
    """The permission or policy decision an entry recorded, parsed from its canonical JSON."""

    def to_representation(self, value):
        """Parse the stored canonical JSON text."""
        return json.loads(value) if value else None


class EntrySerializer(serializers.ModelSerializer):
    """One entry as recorded: who, what, on which target, in which run and request."""

    seq = serializers.IntegerField(
        allow_null=True,
        help_text="Its 0-based index in the Merkle tree; null while not yet sequenced.",
    )
    actor_kind = serializers.ChoiceField(choices=ActorKind.choices)
    decision = DecisionField()

    class Meta:
        model = AuditEntry
        fields = list(EXPORT_FIELDS)  # the list shows what the report's exports carry
        read_only_fields = fields


class CheckpointSerializer(serializers.ModelSerializer):
    """A signed statement of the tree's size and root; `public_key` when this server signed it."""

    public_key = serializers.SerializerMethodField(
        help_text="Base64 of the raw Ed25519 public key that verifies the signature, when it is "
        "this server's current key (compare its key id with the one you trust)."
    )

    class Meta:
        model = AuditCheckpoint
        fields = [
            "id",
            "tree_size",
            "root_hash",
            "timestamp",
            "key_id",
            "signature",
            "created_at",
            "public_key",
        ]
        read_only_fields = fields

    @extend_schema_field({"type": "string", "nullable": True})
    def get_public_key(self, checkpoint: AuditCheckpoint) -> str | None:
        """Return the current key when it is the one that signed this checkpoint."""
        public = keys.public_key()
        if key_id_for(public) != checkpoint.key_id:
            return None
        return base64.b64encode(public).decode()


class ErasureSerializer(serializers.Serializer):
    """When, why and by which entry an entry's body was erased."""

    erased_at = serializers.DateTimeField()
    erasure_entry_id = serializers.IntegerField()
    reason = serializers.CharField(allow_blank=True)


class EntryProofSerializer(EntrySerializer):
    """An entry with its body, its Merkle leaf, and its inclusion proof in a signed checkpoint.

    Check it with nothing but this: SHA-256(0x00 || canonical JSON of `leaf`) is `leaf_hash`;
    that leaf at `seq` reaches the checkpoint's `root_hash` through `inclusion_proof`
    (RFC 9162 2.1.3.2); the checkpoint's signature verifies (audit/evidence.py says what it
    signs); and a body that is not null has the SHA-256 `body_digest` of its canonical JSON.
    """

    body = serializers.JSONField(
        allow_null=True, help_text="The body; null when it is erased or the entry had none."
    )
    erased = ErasureSerializer(allow_null=True)
    status = serializers.ChoiceField(
        choices=["pending", "sequenced", "covered"],
        help_text="pending: not sequenced yet; sequenced: no checkpoint covers it yet; covered: "
        "`checkpoint` covers it and `inclusion_proof` proves it.",
    )
    covered = serializers.BooleanField()
    leaf = serializers.DictField(
        allow_null=True, help_text="What the leaf commits to (its canonical JSON is hashed)."
    )
    leaf_hash = serializers.RegexField(HEX_HASH, allow_null=True)
    inclusion_proof = HashListField(allow_null=True)
    checkpoint = CheckpointSerializer(allow_null=True)

    class Meta(EntrySerializer.Meta):
        fields = [
            *EntrySerializer.Meta.fields,
            "body",
            "erased",
            "status",
            "covered",
            "leaf",
            "leaf_hash",
            "inclusion_proof",
            "checkpoint",
        ]
        read_only_fields = fields


class EntryProofQuerySerializer(serializers.Serializer):
    """Which checkpoint to prove an entry against."""

    checkpoint = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_SEQ,
        help_text="A checkpoint id (one you kept); the newest checkpoint when absent.",
    )


class ConsistencyQuerySerializer(serializers.Serializer):
    """The two checkpoints of a consistency proof: `from` (or `from_size`) and `to`."""

    def get_fields(self):
        """Name the fields `from` and `to`, which Python cannot name as attributes."""
        return {
            "from": serializers.IntegerField(
                required=False,
                min_value=1,
                max_value=MAX_SEQ,
                help_text="The older checkpoint's id.",
            ),
            "from_size": serializers.IntegerField(
                required=False,
                min_value=0,
                max_value=MAX_SEQ,
                help_text="Or the older checkpoint's tree size (what a kept checkpoint carries).",
            ),
            "to": serializers.IntegerField(
                required=False,
                min_value=1,
                max_value=MAX_SEQ,
                help_text="The newer checkpoint's id; the newest when absent.",
            ),
        }

    def validate(self, attrs):
        """Ask for exactly one of `from` and `from_size`."""
        if ("from" in attrs) == ("from_size" in attrs):
            raise serializers.ValidationError({"from": ["Give exactly one of from and from_size."]})
        return attrs


class ConsistencySerializer(serializers.Serializer):
    """The proof that the newer checkpoint's tree extends the older one's (RFC 9162 2.1.4)."""

    old = CheckpointSerializer(source="old_checkpoint")
    new = CheckpointSerializer(source="new_checkpoint")
    proof = HashListField()


class EvidenceQuerySerializer(serializers.Serializer):
    """Whose evidence: the entries of one run."""

    run = serializers.CharField(max_length=64, help_text="The run id the entries carry.")


class BundleCheckpointSerializer(serializers.Serializer):
    """A checkpoint as a bundle carries it."""

    tree_size = serializers.IntegerField()
    root_hash = serializers.RegexField(HEX_HASH)
    timestamp = serializers.CharField()
    key_id = serializers.CharField()
    signature = serializers.CharField()


class BundleEntrySerializer(serializers.Serializer):
    """One entry of a bundle: its leaf, its body and its inclusion proof."""

    seq = serializers.IntegerField()
    leaf = serializers.DictField()
    body = serializers.JSONField(allow_null=True)
    inclusion_proof = HashListField()


class EvidenceBundleSerializer(serializers.Serializer):
    """A `steward-evidence/1` bundle (audit/evidence.py), checked by scripts/verify_evidence.py."""

    format = serializers.CharField()
    public_key = serializers.CharField()
    checkpoint = BundleCheckpointSerializer()
    entries = BundleEntrySerializer(many=True)
    not_covered = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="Ids of the run's entries no checkpoint covers yet (not in this bundle).",
    )
