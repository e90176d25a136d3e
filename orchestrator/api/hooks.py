"""Inbound webhooks at /api/v1/hooks/<slug>/: verified by signature, not by a token.

The view is thin: orchestrator.inbound verifies, records and acts; refusals become problems
(401 for a bad signature, 404 for an unknown endpoint, 422 for a payload the mapping cannot
read, 409 for what the engine refuses).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.api.schema import problems
from orchestrator import inbound
from orchestrator.models import InboundEndpoint


class HookAcceptedSerializer(serializers.Serializer):
    """What Steward did with a webhook: the run it started or signalled."""

    webhook_id = serializers.CharField()
    replayed = serializers.BooleanField(help_text="True: this webhook-id was accepted before.")
    run = serializers.IntegerField(allow_null=True)
    signal = serializers.IntegerField(allow_null=True)


_SIGNATURE_HEADERS = [
    OpenApiParameter(name, str, OpenApiParameter.HEADER, required=True, description=text)
    for name, text in (
        ("webhook-id", "The message's unique id: accepted once per endpoint."),
        ("webhook-timestamp", "Unix seconds; at most 5 minutes from Steward's clock."),
        ("webhook-signature", "`v1,<base64 HMAC-SHA256 of id.timestamp.body>` (space-separated)."),
    )
]


class InboundHookView(APIView):
    """Receive a Standard Webhooks message for an admin-configured endpoint."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get_authenticate_header(self, request):
        """Name the scheme a refused webhook failed (its 401's WWW-Authenticate)."""
        return 'Webhook-Signature realm="steward-hooks"'

    @extend_schema(
        summary="Receive a webhook (start a run or signal one)",
        auth=[],
        request={"application/json": OpenApiTypes.OBJECT},
        parameters=_SIGNATURE_HEADERS,
        responses={
            200: HookAcceptedSerializer,
            202: HookAcceptedSerializer,
            **problems(401, 404, 409, 422),
        },
    )
    def post(self, request, slug: str):
        """Verify the signature, record the webhook-id once and act through the engine."""
        try:
            hook, new = inbound.receive(slug, request.body, dict(request.headers))
        except InboundEndpoint.DoesNotExist:
            raise exceptions.NotFound("No active inbound endpoint has this name.") from None
        except inbound.HookRefused as exc:
            raise exceptions.AuthenticationFailed(f"Bad webhook signature: {exc}.") from None
        data = {
            "webhook_id": hook.webhook_id,
            "replayed": not new,
            "run": hook.run_id,
            "signal": hook.signal_id,
        }
        return Response(
            HookAcceptedSerializer(data).data,
            status=status.HTTP_202_ACCEPTED if new else status.HTTP_200_OK,
        )
