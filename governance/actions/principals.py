"""Principals: people, agents' service accounts and integrations, all plain Django users.

An agent acts through its own user, flagged as an agent through its Principal and unable to log
in (unusable password, refused by governance.backends.PrincipalBackend), so one permission
model covers people and agents and every record names who acted.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from audit.actors import requires_actor
from governance.actions.common import GovernanceError, audited_refusals, name_of, save_governed
from governance.models import Principal, PrincipalKind


def principal_of(user) -> Principal | None:
    """Return a user's principal (cached on the user), or None for users without one."""
    if user is None or not getattr(user, "pk", None):
        return None
    try:
        return user.principal
    except Principal.DoesNotExist:
        return None


def kind_of(user) -> str:
    """Return what a user is: person (also for users without a principal), agent or integration."""
    principal = principal_of(user)
    return principal.kind if principal is not None else PrincipalKind.PERSON


def is_person(user) -> bool:
    """Tell whether a user is a person (not an agent or an integration)."""
    return kind_of(user) == PrincipalKind.PERSON


def accountable_owner(user):
    """Return who answers for a user: the owner of an agent or integration, a person themselves."""
    principal = principal_of(user)
    if principal is not None and principal.kind != PrincipalKind.PERSON:
        return principal.owner
    return user


def _require_person(user, what: str) -> None:
    """Refuse an owner who is not an active person."""
    if user is None or not user.is_active or not is_person(user):
        raise GovernanceError(f"{what} must be an active person.", code="owner_not_a_person")


@requires_actor
@transaction.atomic
def ensure_principal(user, *, kind: str = PrincipalKind.PERSON, actor) -> Principal:
    """Return a user's principal, creating a person principal when it has none."""
    principal = principal_of(user)
    if principal is not None:
        return principal
    principal = Principal(user=user, kind=kind, display_name=user.get_full_name())
    return save_governed(principal, actor=actor, reason="principal created")


@requires_actor
@audited_refusals
def create_person(
    *,
    username: str,
    email: str = "",
    password: str | None = None,
    first_name: str = "",
    last_name: str = "",
    is_staff: bool = False,
    actor,
):
    """Create a person who can log in (staff users may use the admin, as far as roles allow)."""
    user = get_user_model().objects.create_user(
        username,
        email=email,
        password=password,
        first_name=first_name,
        last_name=last_name,
        is_staff=is_staff,
    )
    save_governed(
        Principal(
            user=user, kind=PrincipalKind.PERSON, display_name=f"{first_name} {last_name}".strip()
        ),
        actor=actor,
        reason="person created",
    )
    return user


def _create_service_account(
    kind: str, *, username: str, owner, display_name: str, description: str, actor
):
    """Create a user that never logs in with a password, with its accountable owner."""
    _require_person(owner, "The accountable owner")
    user = get_user_model()(username=username, is_active=True, is_staff=False)
    user.set_unusable_password()
    user.save()
    save_governed(
        Principal(
            user=user,
            kind=kind,
            display_name=display_name,
            description=description,
            owner=owner,
            owner_name=name_of(owner),
        ),
        actor=actor,
        reason=f"{kind} principal created",
    )
    return user


@requires_actor
@audited_refusals
def create_agent_principal(
    *, username: str, owner, display_name: str = "", description: str = "", actor
):
    """Create an agent's service-account user: flagged as an agent, unable to log in, owned."""
    return _create_service_account(
        PrincipalKind.AGENT,
        username=username,
        owner=owner,
        display_name=display_name,
        description=description,
        actor=actor,
    )


@requires_actor
@audited_refusals
def create_integration_principal(
    *, username: str, owner, display_name: str = "", description: str = "", actor
):
    """Create an integration's user (API tokens only, no password), with its accountable owner."""
    return _create_service_account(
        PrincipalKind.INTEGRATION,
        username=username,
        owner=owner,
        display_name=display_name,
        description=description,
        actor=actor,
    )


@requires_actor
@audited_refusals
def set_owner(principal: Principal, owner, *, actor, reason: str) -> Principal:
    """Make another person accountable for an agent or integration."""
    _require_person(owner, "The accountable owner")
    principal.owner = owner
    principal.owner_name = name_of(owner)
    return save_governed(principal, actor=actor, reason=reason)
