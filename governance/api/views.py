"""Governance's API endpoints: views stay thin, reading and deciding through the services."""

from __future__ import annotations

from django.db.models import Count, Q
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.api.pagination import CursorPagination
from audit.api.schema import problems
from governance import services
from governance.actions.eligibility import may_decide
from governance.api.errors import Unprocessable, if_match, refused, valid
from governance.api.serializers import (
    ApprovalRequestDetailSerializer,
    ApprovalRequestSerializer,
    DecisionInputSerializer,
    EscalationDetailSerializer,
    EscalationSerializer,
    ResolutionInputSerializer,
    WhoAmISerializer,
)
from governance.filters import ApprovalRequestFilter, EscalationFilter
from governance.models import ApiToken, ApprovalRequest, DecisionKind, Escalation


class WhoAmIView(APIView):
    """Say who the caller is: an integration checks its token here."""

    @extend_schema(responses={200: WhoAmISerializer, **problems()}, summary="The calling principal")
    def get(self, request):
        """Return the caller's principal, roles and (with a token) the token's facts."""
        user = request.user
        principal = services.principal_of(user)
        owner = services.accountable_owner(user)
        data = {
            "username": user.get_username(),
            "kind": services.kind_of(user),
            "display_name": principal.display_name if principal is not None else "",
            "accountable_owner": owner.get_username() if owner is not None else None,
            "roles": [role.name for role in services.roles_of(user)],
            "token": request.auth if isinstance(request.auth, ApiToken) else None,
        }
        return Response(WhoAmISerializer(data).data)


# --- approvals and escalations ------------------------------------------------------------------


class DueOrder(CursorPagination):
    """Inbox pages in the order the work is due (then by id, to be stable)."""

    ordering = ("due_at", "id")


class OpenedOrder(CursorPagination):
    """Escalation pages, newest first."""

    ordering = ("-created_at", "-id")


def _approval_rows(user):
    """Return the requests `user` may see, with what their list and detail show."""
    return (
        ApprovalRequest.objects.restrict(user, "view")
        .select_related("role", "approval_rule")
        .annotate(
            approvals_given=Count("decisions", filter=Q(decisions__decision=DecisionKind.APPROVE))
        )
    )


def _approval_detail(request, approval: ApprovalRequest) -> Response:
    """Answer one request in full, its digest as the ETag a decision may send back in If-Match."""
    eligibility = may_decide(request.user, approval)
    data = ApprovalRequestDetailSerializer(approval, context={"eligibility": eligibility}).data
    return Response(data, headers={"ETag": f'"{approval.arguments_digest}"'})


class ApprovalListView(ListAPIView):
    """The caller's approval inbox (by default what waits for their decision)."""

    serializer_class = ApprovalRequestSerializer
    filterset_class = ApprovalRequestFilter
    pagination_class = DueOrder

    def get_queryset(self):
        """Every request the caller may see; the filterset's scope narrows it."""
        return _approval_rows(self.request.user)

    @extend_schema(
        summary="List approval requests (the inbox)",
        description="`scope=mine` (the default) lists exactly the requests the caller may decide "
        "now, by the rule the decision applies; `decided` what they decided; `all` what they "
        "may see. Ordered by due time.",
        responses={200: ApprovalRequestSerializer(many=True), **problems(400)},
    )
    def get(self, request, *args, **kwargs):
        """List the caller's requests."""
        return super().get(request, *args, **kwargs)


class ApprovalDetailView(APIView):
    """One approval request: exactly what is approved, and whether the caller may decide it."""

    @extend_schema(
        summary="Read an approval request",
        description="The `ETag` is the arguments' digest; send it back as `If-Match` (or as "
        "`digest` in the decision's body) to decide on exactly these arguments.",
        responses={200: ApprovalRequestDetailSerializer, **problems(404)},
    )
    def get(self, request, pk: int):
        """Return the request if the caller may see it (404, audited, otherwise)."""
        approval = services.get_for(request.user, _approval_rows(request.user), pk)
        return _approval_detail(request, approval)


class ApprovalDecisionView(APIView):
    """Decide a request through the decision service (every rule is checked there)."""

    @extend_schema(
        summary="Decide an approval request",
        description="Approve, reject or request changes. The body's `digest` (or `If-Match`) "
        "must be the digest the decider read: a stale one is 409 (body) or 412 (If-Match). A "
        "rejection needs a `reason` (422). Whom the eligibility rule refuses gets 403 with its "
        "code in `type` (`.../refused/<code>`); a request no longer open is 409.",
        request=DecisionInputSerializer,
        parameters=[
            OpenApiParameter(
                "If-Match",
                str,
                OpenApiParameter.HEADER,
                description="The request's ETag (its arguments' digest), as read.",
            )
        ],
        responses={200: ApprovalRequestDetailSerializer, **problems(403, 404, 409, 412, 422)},
    )
    def post(self, request, pk: int):
        """Record the caller's decision; answer the request as it now stands."""
        approval = services.get_for(request.user, ApprovalRequest, pk)
        body = valid(DecisionInputSerializer, request.data)
        header = if_match(request)
        if header is None and "digest" not in body:
            raise Unprocessable({"digest": ["Send the digest you decided on (or If-Match)."]})
        if header is not None and body.get("digest", header) != header:
            raise Unprocessable({"digest": ["The digest and If-Match name different arguments."]})
        try:
            services.decide_approval(
                approval,
                user=request.user,
                decision=body["decision"],
                comment=body["reason"],
                expected_digest=header or body["digest"],
            )
        except services.GovernanceError as refusal:
            raise refused(refusal, precondition=header is not None) from None
        return _approval_detail(
            request, services.get_for(request.user, _approval_rows(request.user), pk)
        )


def _escalation_rows(user):
    """Return the escalations `user` may see, with what their list and detail show."""
    return Escalation.objects.restrict(user, "view").select_related("role")


def _escalation_detail(request, escalation: Escalation) -> Response:
    """Answer one escalation in full, with whether the caller may resolve it."""
    eligibility = may_decide(request.user, escalation)
    return Response(
        EscalationDetailSerializer(escalation, context={"eligibility": eligibility}).data
    )


class EscalationListView(ListAPIView):
    """The caller's escalation inbox (by default what waits for them to resolve)."""

    serializer_class = EscalationSerializer
    filterset_class = EscalationFilter
    pagination_class = OpenedOrder

    def get_queryset(self):
        """Every escalation the caller may see; the filterset's scope narrows it."""
        return _escalation_rows(self.request.user)

    @extend_schema(
        summary="List escalations (the inbox)",
        description="`scope=mine` (the default) lists exactly the escalations the caller may "
        "resolve now, by the rule the resolution applies; `decided` what they resolved; `all` "
        "what they may see. Newest first.",
        responses={200: EscalationSerializer(many=True), **problems(400)},
    )
    def get(self, request, *args, **kwargs):
        """List the caller's escalations."""
        return super().get(request, *args, **kwargs)


class EscalationDetailView(APIView):
    """One escalation, and whether the caller may resolve it."""

    @extend_schema(
        summary="Read an escalation",
        responses={200: EscalationDetailSerializer, **problems(404)},
    )
    def get(self, request, pk: int):
        """Return the escalation if the caller may see it (404, audited, otherwise)."""
        escalation = services.get_for(request.user, _escalation_rows(request.user), pk)
        return _escalation_detail(request, escalation)


class EscalationResolutionView(APIView):
    """Resolve an escalation through the resolution service (every rule is checked there)."""

    @extend_schema(
        summary="Resolve an escalation",
        description="Take over (`result` is the step's output), send back for a retry, or stop "
        "the run. Whom the eligibility rule refuses gets 403 with its code in `type`; an "
        "escalation no longer open is 409; taking over without a result is 422.",
        request=ResolutionInputSerializer,
        responses={200: EscalationDetailSerializer, **problems(403, 404, 409, 422)},
    )
    def post(self, request, pk: int):
        """Record the caller's resolution; answer the escalation as it now stands."""
        escalation = services.get_for(request.user, Escalation, pk)
        body = valid(ResolutionInputSerializer, request.data)
        try:
            services.resolve_escalation(
                escalation,
                user=request.user,
                resolution=body["outcome"],
                result=body["result"],
                comment=body["reason"],
            )
        except services.GovernanceError as refusal:
            raise refused(refusal) from None
        return _escalation_detail(
            request, services.get_for(request.user, _escalation_rows(request.user), pk)
        )
