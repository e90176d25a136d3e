"""Authentication for people only, and the permission look-ups every request makes, one query each.

An agent's or an integration's account never logs in. Django's model backend reads a user's
permissions in two queries (their own, their groups') and guardian an object's in two more; an
API start asks both, on a user loaded anew for every request, so four of its queries were
permission reads (bench/api.py, docs/benchmarks.md). The backends here read each in one query
with the same answer and the same per-user caching as the libraries they extend.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from guardian.backends import ObjectPermissionBackend as GuardianBackend
from guardian.backends import check_support
from guardian.ctypes import get_content_type
from guardian.models import GroupObjectPermission, UserObjectPermission

from governance.actions.principals import is_person


def _tables() -> dict[str, str]:
    """The tables the permission queries read, by their models' names (never spelled twice)."""
    user = get_user_model()
    return {
        "permission": Permission._meta.db_table,
        "content_type": ContentType._meta.db_table,
        "user_permissions": user.user_permissions.through._meta.db_table,
        "user_groups": user.groups.through._meta.db_table,
        "group_permissions": Group.permissions.through._meta.db_table,
        "user_object": UserObjectPermission._meta.db_table,
        "group_object": GroupObjectPermission._meta.db_table,
    }


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

    def get_all_permissions(self, user_obj, obj=None):
        """The user's and their groups' model permissions ('app.codename'), read in one query."""
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            if user_obj.is_superuser:
                user_obj._perm_cache = super().get_all_permissions(user_obj)
            else:
                sql = (
                    "SELECT ct.app_label, p.codename FROM {permission} p "
                    "JOIN {content_type} ct ON ct.id = p.content_type_id WHERE p.id IN ("
                    "SELECT permission_id FROM {user_permissions} WHERE user_id = %s "
                    "UNION SELECT gp.permission_id FROM {group_permissions} gp "
                    "JOIN {user_groups} ug ON ug.group_id = gp.group_id WHERE ug.user_id = %s)"
                ).format(**_tables())
                with connection.cursor() as cursor:
                    cursor.execute(sql, [user_obj.pk, user_obj.pk])
                    user_obj._perm_cache = {f"{app}.{code}" for app, code in cursor.fetchall()}
        return user_obj._perm_cache


class ObjectPermissionBackend(GuardianBackend):
    """Guardian's object permissions, the user's and their groups' read in one query."""

    def has_perm(self, user_obj, perm, obj=None):
        """Tell whether the user holds `perm` on `obj` itself (guardian's rules)."""
        support, user_obj = check_support(user_obj, obj)
        if not support:
            return False
        app_label, _, codename = perm.rpartition(".")
        if (app_label and app_label != obj._meta.app_label) or user_obj.is_superuser:
            return super().has_perm(user_obj, perm, obj)  # guardian's own errors and answers
        if not user_obj.is_active:
            return False
        return codename in self.object_codenames(user_obj, obj)

    def object_codenames(self, user_obj, obj) -> set[str]:
        """The codenames the user holds on `obj`, directly or through a group."""
        sql = (
            "SELECT p.codename FROM {permission} p WHERE p.id IN ("
            "SELECT permission_id FROM {user_object} "
            "WHERE user_id = %s AND content_type_id = %s AND object_pk = %s "
            "UNION SELECT go.permission_id FROM {group_object} go "
            "JOIN {user_groups} ug ON ug.group_id = go.group_id "
            "WHERE ug.user_id = %s AND go.content_type_id = %s AND go.object_pk = %s)"
        ).format(**_tables())
        ctype = get_content_type(obj).pk
        key = str(obj.pk)
        with connection.cursor() as cursor:
            cursor.execute(sql, [user_obj.pk, ctype, key, user_obj.pk, ctype, key])
            return {row[0] for row in cursor.fetchall()}
