"""System checks: production refuses to start without the key that protects provider secrets."""

from django.conf import settings
from django.core.checks import Error, register


@register()
def secrets_key_configured(app_configs, **kwargs):
    """Refuse DEBUG-off deployments that have no STEWARD_SECRETS_KEY."""
    if settings.DEBUG or getattr(settings, "STEWARD_SECRETS_KEY", None):
        return []
    return [
        Error(
            "STEWARD_SECRETS_KEY is not set.",
            hint="With DEBUG off, set STEWARD_SECRETS_KEY or STEWARD_SECRETS_KEY_FILE to a Fernet "
            "key; it encrypts the model providers' API keys at rest.",
            id="agents.E001",
        )
    ]
