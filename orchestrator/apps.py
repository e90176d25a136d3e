from django.apps import AppConfig


def run_initiator(run_id: int):
    """Return who started a run (governance asks, for an escalation's separation of duties)."""
    from orchestrator.models import WorkflowRun

    run = WorkflowRun.objects.filter(pk=run_id).select_related("started_by").first()
    return run.started_by if run is not None else None


def workflows_of(user, run_ids):
    """Return the workflows (slug, name) of these runs that `user` may see (the inbox asks)."""
    from orchestrator.models import Workflow

    visible = Workflow.objects.restrict(user, "view").filter(runs__in=run_ids).distinct()
    return list(visible.order_by("slug").values_list("slug", "name"))


def runs_of(slug: str):
    """Return the ids of a workflow's runs, as a subquery (the inbox's workflow filter)."""
    from orchestrator.models import WorkflowRun

    return WorkflowRun.objects.filter(workflow__slug=slug).values("pk")


def workflow_keys_of(slug: str):
    """Return a workflow's id as an audit target id (text), as a subquery (the inbox asks)."""
    from django.db.models import CharField
    from django.db.models.functions import Cast

    from orchestrator.models import Workflow

    keys = Workflow.objects.filter(slug=slug).annotate(key=Cast("pk", CharField()))
    return keys.values("key")


class OrchestratorConfig(AppConfig):
    """Workflows, runs and the engine; wires in what the lower apps provide."""

    name = "orchestrator"
    verbose_name = "Workflows and runs"

    def ready(self):
        """Connect the engine to the audit log and register step types other apps provide."""
        from agents.steps import AgentStep
        from governance.actions.escalations import register_run_initiator_lookup
        from governance.inbox import WorkflowLookup, register_workflow_lookup
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
        register_run_initiator_lookup(run_initiator)
        register_workflow_lookup(
            WorkflowLookup(
                workflows_of=workflows_of, runs_of=runs_of, target_keys_of=workflow_keys_of
            )
        )
        # Decisions reach runs only through governance's services, which check who decides.
        reserve_signal_prefix("approval:")
        reserve_signal_prefix("escalation:")
        reserve_signal_prefix("children:")  # the engine's own: a step's children are done
