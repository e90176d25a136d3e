"""API tokens: issued for a person or an integration, shown once, kept only as a keyed hash.

A token reads `stw_<id>_<secret>`: `stw_<id>` is its public prefix (lists, logs, the audit log,
and what a secret scanner greps for), the secret is 256 random bits. The database keeps the
prefix and an HMAC-SHA256 of the whole token under `STEWARD_TOKEN_HASH_KEY` (derived from
`SECRET_KEY` when unset), so a copy of the database holds nothing that authenticates.

Issuing a token needs the model permission `governance.add_apitoken` and `change` on the
principal it acts as; a person may revoke the tokens that act as them or that they issued.
Agents never get tokens, by design: an agent acts only through the engine, where every tool
call meets its policies and its approvals; a token would let it call the API as itself, around
them. Issuing one is refused (`agent_token`), and a token whose principal has since become an
agent does not authenticate.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils.crypto import salted_hmac

from audit import clock
from audit import services as audit
from audit.actors import SYSTEM, requires_actor
from governance.actions.common import GovernanceError, audited_refusals, name_of, save_governed
from governance.actions.principals import kind_of, principal_of
from governance.models import ApiToken, PrincipalKind
from governance.permissions import AccessDenied, require, require_model

log = logging.getLogger(__name__)

TOKEN_PREFIX = "stw_"
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
AGENT_REFUSAL = "Agents act only through the engine; an agent cannot have an API token."


class TokenRefused(Exception):
    """A presented token does not authenticate; the message says why, never the secret."""


def token_digest(token: str) -> str:
    """Return the keyed hash a token is stored as."""
    key = getattr(settings, "STEWARD_TOKEN_HASH_KEY", "") or None
    return salted_hmac("steward.api-token", token, secret=key, algorithm="sha256").hexdigest()


def _new_token() -> tuple[str, str]:
    """Return a fresh (prefix, token)."""
    token_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))
    prefix = f"{TOKEN_PREFIX}{token_id}"
    return prefix, f"{prefix}_{secrets.token_urlsafe(32)}"


@requires_actor
@audited_refusals
def issue_token(
    user,
    *,
    actor,
    name: str,
    read_only: bool = False,
    expires_at: dt.datetime | None = None,
) -> tuple[ApiToken, str]:
    """Issue a token acting as `user`; return it and the token text, which is shown only now."""
    require_model(actor, "add", ApiToken)
    principal = principal_of(user)
    if principal is not None:
        require(actor, "change", principal)
    elif not (actor.is_superuser or actor.pk == user.pk):
        raise AccessDenied(actor, "change", user, detail="You may not issue tokens for that user.")
    if kind_of(user) == PrincipalKind.AGENT:
        raise GovernanceError(AGENT_REFUSAL, code="agent_token")
    if not user.is_active:
        raise GovernanceError("A token needs an active principal.", code="inactive")
    now = clock.now()
    if expires_at is not None and expires_at <= now:
        raise GovernanceError("A token's expiry must be in the future.", code="expiry")
    if not name.strip():
        raise GovernanceError("Say what the token is for.", code="name")
    prefix, token = _new_token()
    row = ApiToken(
        user=user,
        name=name.strip(),
        prefix=prefix,
        digest=token_digest(token),
        read_only=read_only,
        expires_at=expires_at,
        created_by=actor,
        created_by_name=name_of(actor),
        created_at=now,
    )
    save_governed(row, actor=actor, reason=f"API token {prefix} issued", check=False)
    audit.record(
        action="governance.api_token.issued",
        actor=actor,
        target=row,
        body={
            "prefix": prefix,
            "principal": name_of(user),
            "read_only": read_only,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return row, token


@requires_actor
@audited_refusals
def revoke_token(token: ApiToken, *, actor, reason: str) -> ApiToken:
    """Revoke a token at once; every later request with it is refused."""
    require(actor, "change", token)
    if token.revoked_at is not None:
        return token
    if not reason.strip():
        raise GovernanceError("Say why the token is revoked.", code="reason")
    token.revoked_at = clock.now()
    token.revoked_by_name = name_of(actor)
    token.revoke_reason = reason.strip()[:500]
    save_governed(token, actor=actor, reason=f"revoked: {token.revoke_reason}")
    audit.record(
        action="governance.api_token.revoked",
        actor=actor,
        target=token,
        body={"prefix": token.prefix, "reason": token.revoke_reason},
    )
    return token


def authenticate_token(presented: str, *, now: dt.datetime | None = None) -> ApiToken:
    """Return the usable token a request presented, or raise TokenRefused saying why.

    A refusal for a real token (wrong secret, revoked, expired, its principal disabled) is
    audited under the token's prefix; an unknown prefix is only logged, so that noise from the
    internet cannot fill the audit log.
    """
    now = now or clock.now()
    # The secret may hold "_" itself (URL-safe base64): the prefix is the first two parts.
    parts = presented.split("_", 2)
    prefix = f"{parts[0]}_{parts[1]}" if len(parts) == 3 else ""
    if not prefix.startswith(TOKEN_PREFIX) or len(prefix) > 32:
        raise TokenRefused("That is not a Steward API token.")
    row = ApiToken.objects.select_related("user__principal").filter(prefix=prefix).first()
    if row is None:
        log.info("API request with an unknown token prefix %s", prefix[:32])
        raise TokenRefused("Unknown or revoked token.")
    if not hmac.compare_digest(row.digest, token_digest(presented)):
        _refused(row, "wrong secret")
        raise TokenRefused("Unknown or revoked token.")
    if row.revoked_at is not None:
        _refused(row, "revoked")
        raise TokenRefused("Unknown or revoked token.")
    if row.expires_at is not None and row.expires_at <= now:
        _refused(row, "expired")
        raise TokenRefused("The token has expired.")
    if not row.user.is_active:
        _refused(row, "principal inactive")
        raise TokenRefused("The token's principal is disabled.")
    if kind_of(row.user) == PrincipalKind.AGENT:
        _refused(row, "agent principal")
        raise TokenRefused("Agents cannot use API tokens.")
    _touch(row, now)
    return row


def _touch(row: ApiToken, now: dt.datetime) -> None:
    """Record the token's use, at most once a minute (one conditional update, no history)."""
    if row.last_used_at is not None and row.last_used_at >= now - LAST_USED_RESOLUTION:
        return  # the row just read is recent enough: no round trip for the other requests
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    if ApiToken.objects.filter(stale, pk=row.pk).update(last_used_at=now):
        row.last_used_at = now


def _refused(row: ApiToken, why: str) -> None:
    """Audit a refused use of a real token (in its own transaction: the request may fail)."""
    with transaction.atomic():
        audit.record(
            action="governance.api_token.refused",
            actor=SYSTEM,  # nobody is authenticated: Steward refused what was presented
            target=row,
            body={"prefix": row.prefix, "reason": why, "principal": name_of(row.user)},
        )
