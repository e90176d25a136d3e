from django.apps import AppConfig


class AgentsConfig(AppConfig):
    """Agents: the registry, model providers, governed tools, agent steps and shared memory."""

    name = "agents"

    def ready(self):
        """Register the system checks."""
        from agents import checks  # noqa: F401  (registers the checks)
