"""How the OpenAPI schema describes the API's bearer tokens (imported by governance's URLs)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """`Authorization: Bearer stw_...`: an API token issued in the admin or by a command."""

    target_class = "governance.api.authentication.BearerTokenAuthentication"
    name = "bearerToken"

    def get_security_definition(self, auto_schema):
        """Describe the scheme: HTTP bearer, tokens prefixed `stw_`."""
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "stw_<prefix>_<secret>",
            "description": "An API token; read-only tokens are refused on every write (403).",
        }
