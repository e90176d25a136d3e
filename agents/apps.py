from django.apps import AppConfig
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models.signals import post_migrate


def _partially_migrated(using: str) -> bool:
    """Tell whether migrations are left to apply (then the models may not match the tables)."""
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[using])
    return bool(executor.migration_plan(executor.loader.graph.leaf_nodes()))


def _is_test_database(using: str) -> bool:
    """Tell whether Django created this database for a test run.

    While Django creates a test database, NAME already holds the test name: the one TEST names,
    or the default `test_<name>`, so `_get_test_db_name()` alone (which prefixes it again) only
    matches when TEST.NAME is set.
    """
    from django.db.backends.base.creation import TEST_DATABASE_PREFIX

    connection = connections[using]
    name = str(connection.settings_dict["NAME"])
    return name == connection.creation._get_test_db_name() or name.startswith(TEST_DATABASE_PREFIX)


def sync_enabled(using: str) -> bool:
    """Tell whether `migrate` syncs the tool rows (STEWARD_SYNC_TOOLS_ON_MIGRATE decides).

    Unset, it syncs every database but one Django creates for tests: those start without tool
    rows (and without their audit entries), and tests sync what they need themselves.
    """
    enabled = getattr(settings, "STEWARD_SYNC_TOOLS_ON_MIGRATE", None)
    return (not _is_test_database(using)) if enabled is None else bool(enabled)


def sync_tools_after_migrate(sender, *, using=DEFAULT_DB_ALIAS, plan=None, **kwargs):
    """Mirror the registered tools as Tool rows after `migrate` (not after a flush).

    `migrate` sends a plan (empty when nothing was left to apply, so a deployment that only
    registered new tools still gets their rows); `flush` sends none, and an emptied database
    stays empty. New rows start disabled; admins' settings on existing rows are kept.
    """
    if plan is None or using != DEFAULT_DB_ALIAS or not sync_enabled(using):
        return
    if _partially_migrated(using):
        return
    from agents.actions.registry import sync_tools
    from audit.actors import SYSTEM

    sync_tools(actor=SYSTEM)


class AgentsConfig(AppConfig):
    """Agents: the registry, model providers, governed tools, agent steps and shared memory."""

    name = "agents"

    def ready(self):
        """Register the checks and receivers, and sync the tool rows after every migrate."""
        from agents import checks, receivers  # noqa: F401  (registers them)

        post_migrate.connect(
            sync_tools_after_migrate, sender=self, dispatch_uid="agents.sync_tools"
        )
