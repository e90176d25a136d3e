"""Authentication for people only: an agent's or an integration's account never logs in."""

from django.contrib.auth.backends import ModelBackend

from governance.actions.principals import is_person


class PrincipalBackend(ModelBackend):
    """Django's model backend, except that only people authenticate (even with a password).

    Agents and integrations act through their service accounts, never through a login: a
    password or a staff flag given to one by mistake opens nothing, and a session it holds is
    dropped on its next request (Django re-checks `user_can_authenticate` in `get_user`).
    Permissions are unaffected: the backend still answers has_perm for every active principal.
    """

    def user_can_authenticate(self, user):
        """Refuse inactive users (as Django does) and every principal that is not a person."""
        return super().user_can_authenticate(user) and is_person(user)
