from django.apps import AppConfig


class OrchestratorConfig(AppConfig):
    """Workflows, runs and the engine; wires in what the lower apps provide."""

    name = "orchestrator"
    verbose_name = "Workflows and runs"

    def ready(self):
        """Connect the engine to the audit log and register step types other apps provide."""
        from agents.steps import AgentStep
        from governance.steps import ApprovalStep, escalate_failed_step
        from orchestrator import receivers  # noqa: F401  (connects signal receivers)
        from orchestrator.steptypes import (
            register_failure_handler,
            register_step_type,
            reserve_signal_prefix,
        )

        register_step_type(ApprovalStep())
        register_step_type(AgentStep())
        register_failure_handler("escalate", escalate_failed_step)
        # Decisions reach runs only through governance's services, which check who decides.
        reserve_signal_prefix("approval:")
        reserve_signal_prefix("escalation:")
        reserve_signal_prefix("children:")  # the engine's own: a step's children are done
