"""Authentication that refuses agents: an agent's service account never logs in."""

from django.contrib.auth.backends import ModelBackend


class PrincipalBackend(ModelBackend):
    """Django's model backend, except that agents cannot authenticate (even with a password)."""

    def user_can_authenticate(self, user):
        """Refuse inactive users (as Django does) and agents' service accounts."""
        return super().user_can_authenticate(user) and not getattr(user, "is_agent", False)
