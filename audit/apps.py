from django.apps import AppConfig


class AuditConfig(AppConfig):
    """The audit trail: the lowest layer, written to by every other app, importing none of them."""

    name = "audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Connect the receivers that record logins, permission and admin changes."""
        from audit import receivers

        receivers.connect()
