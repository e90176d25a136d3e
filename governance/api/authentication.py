"""How API callers prove who they are: `Authorization: Bearer stw_...` tokens, or the session."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from audit import services as audit
from governance.actions.tokens import TokenRefused, authenticate_token
from governance.models import ApiToken


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """Authenticate `Authorization: Bearer <token>` against the keyed hashes of API tokens."""

    keyword = "bearer"

    def authenticate(self, request):
        """Return (user, token) for a good token, None without one, and refuse a bad one."""
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("The Authorization header is `Bearer <token>`.")
        try:
            presented = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("That is not a Steward API token.") from None
        try:
            token = authenticate_token(presented)
        except TokenRefused as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        return token.user, token

    def authenticate_header(self, request):
        """Name the scheme in the 401's WWW-Authenticate header."""
        return 'Bearer realm="steward"'


class TokenScope(permissions.BasePermission):
    """Refuse writes made with a read-only token."""

    message = "This API token is read-only."

    def has_permission(self, request, view):
        """Allow reads always, and writes unless the request's token is read-only (audited)."""
        token = request.auth
        if not isinstance(token, ApiToken) or not token.read_only:
            return True
        if request.method in permissions.SAFE_METHODS:
            return True
        audit.record(
            action="governance.access_denied",
            actor=request.user,
            target=token,
            body={
                "action": request.method.lower(),
                "outcome": "forbidden",
                "detail": f"read-only token {token.prefix}: {request.method} {request.path}",
            },
        )
        return False


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Describe bearer tokens in the OpenAPI schema (registered by being defined)."""

    target_class = BearerTokenAuthentication
    name = "bearerToken"

    def get_security_definition(self, auto_schema):
        """Return the HTTP bearer scheme, with the token's form."""
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "stw_<id>_<secret>",
        }
