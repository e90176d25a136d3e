"""Admin for what tools wrote: read-only, since only tools write these rows."""

from django.contrib import admin

from agents.models import IncidentUpdate


@admin.register(IncidentUpdate)
class IncidentUpdateAdmin(admin.ModelAdmin):
    """Incident updates the demo tools posted, searchable by incident and channel."""

    list_display = ["posted_at", "incident", "channel", "message", "run_id", "step_id"]
    list_filter = ["channel", "incident"]
    search_fields = ["incident", "channel", "message", "idempotency_key"]
    date_hierarchy = "posted_at"

    def has_add_permission(self, request, obj=None):
        """Updates are posted by tools, not by hand."""
        return False

    def has_change_permission(self, request, obj=None):
        """A posted update is not edited."""
        return False
