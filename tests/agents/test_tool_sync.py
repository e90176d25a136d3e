"""Tool rows follow the code's registry after every `migrate`, keeping what admins set."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.core.management import call_command

from agents import services
from agents.apps import sync_enabled, sync_tools_after_migrate
from agents.models import Tool
from agents.tools import registered_tools
from audit.actors import SYSTEM
from audit.models import AuditEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def sync_on_migrate(settings):
    """Let `migrate` sync in the test database (unset, test databases are left alone)."""
    settings.STEWARD_SYNC_TOOLS_ON_MIGRATE = True


def test_migrate_creates_a_disabled_row_per_registered_tool(sync_on_migrate):
    assert not Tool.objects.exists()
    call_command("migrate", verbosity=0, interactive=False)
    names = set(Tool.objects.values_list("name", flat=True))
    assert names == set(registered_tools())
    assert {"ticket.create", "memory.write", "delegate", "incident.post_update"} <= names
    assert not Tool.objects.filter(enabled=True).exists()
    spec = registered_tools()["http.request"]
    row = Tool.objects.get(name="http.request")
    assert (row.risk, row.side_effects, row.registered) == (spec.risk, spec.side_effects, True)
    created = AuditEntry.objects.filter(action="agents.tool.created")
    assert created.count() == len(names)  # each new row is in the history and the audit log


def test_migrate_again_keeps_admin_settings_and_adds_nothing(sync_on_migrate, world):
    call_command("migrate", verbosity=0, interactive=False)
    row = Tool.objects.get(name="ticket.update")
    services.update_tool(
        row,
        actor=SYSTEM,
        reason="an admin's choice",
        enabled=True,
        risk="critical",
        rate_limit=3,
        rate_window_seconds=600,
        approval_rule=world.approval,
    )
    before = (Tool.objects.count(), row.history.count())
    call_command("migrate", verbosity=0, interactive=False)
    row.refresh_from_db()
    assert (row.enabled, row.risk, row.rate_limit, row.rate_window_seconds) == (
        True,
        "critical",
        3,
        600,
    )
    assert row.approval_rule == world.approval
    assert (Tool.objects.count(), row.history.count()) == before


def test_a_tool_no_longer_registered_is_marked_not_deleted(sync_on_migrate):
    stale = Tool.objects.create(name="gone.tool", description="removed from the code")
    call_command("migrate", verbosity=0, interactive=False)
    stale.refresh_from_db()
    assert stale.registered is False
    assert stale.history.first().history_change_reason == "no longer registered by code"


def test_flush_and_test_databases_are_left_alone(settings):
    config = apps.get_app_config("agents")
    sync_tools_after_migrate(config, using="default", plan=None)  # what flush sends
    assert not Tool.objects.exists()
    settings.STEWARD_SYNC_TOOLS_ON_MIGRATE = None
    assert sync_enabled("default") is False  # this is a database Django made for tests
    call_command("migrate", verbosity=0, interactive=False)
    assert not Tool.objects.exists()
    settings.STEWARD_SYNC_TOOLS_ON_MIGRATE = True
    sync_tools_after_migrate(config, using="default", plan=[])
    assert Tool.objects.count() == len(registered_tools())
