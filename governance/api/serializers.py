"""What the governance API shows of principals and tokens."""

from __future__ import annotations

from rest_framework import serializers

from governance.models import ApiToken


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
