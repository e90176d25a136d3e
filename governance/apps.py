from django.apps import AppConfig


def _is_agent(user) -> bool:
    """Tell whether a user is an agent's service account (through its governance principal)."""
    from governance.models import Principal

    if not user.pk:
        return False
    try:
        return user.principal.kind == "agent"
    except Principal.DoesNotExist:
        return False


class _IsAgent:
    """`user.is_agent`, computed from the principal (a non-data descriptor: tests may set it)."""

    def __get__(self, user, owner=None):
        return self if user is None else _is_agent(user)


class GovernanceConfig(AppConfig):
    """Who may do what: roles, permissions, policies, approvals, escalations."""

    name = "governance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Audit every history record, and let `user.is_agent` answer for every user.

        `is_agent` is contributed to the user class (read through the one-to-one Principal,
        which Django caches on the user), because audit derives an entry's actor kind from
        `getattr(actor, "is_agent", False)` and audit may not import governance.
        """
        from django.contrib.auth import get_user_model

        from governance import history

        history.connect()
        user_model = get_user_model()
        if not hasattr(user_model, "is_agent"):
            user_model.is_agent = _IsAgent()
