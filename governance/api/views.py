"""Governance's API endpoints: views stay thin, reading through the services."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.api.schema import problems
from governance import services
from governance.api.serializers import WhoAmISerializer
from governance.models import ApiToken


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
