"""Tool calls act for a caller (an agent, a person, the system): invocations and rate counters."""

from django.db import migrations, models


def counters_by_caller(apps, schema_editor):
    """Key the existing counters by their agent as a caller."""
    RateCounter = apps.get_model("agents", "RateCounter")
    for counter in RateCounter.objects.all().only("pk", "agent_id"):
        RateCounter.objects.filter(pk=counter.pk).update(caller=f"agent:{counter.agent_id}")


def invocations_by_caller(apps, schema_editor):
    """Name the agent each existing invocation acted for."""
    ToolInvocation = apps.get_model("agents", "ToolInvocation")
    ToolInvocation.objects.update(caller_name=models.F("agent_slug"))


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0006_toolinvocation_proposed_arguments"),
    ]

    operations = [
        migrations.AddField(
            model_name="toolinvocation",
            name="caller_kind",
            field=models.CharField(
                default="agent",
                help_text="Who the call acts for: agent, user or system.",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="toolinvocation",
            name="caller_name",
            field=models.CharField(
                blank=True,
                help_text="The agent's slug or the person's username.",
                max_length=150,
            ),
        ),
        migrations.AlterField(
            model_name="toolinvocation",
            name="agent_slug",
            field=models.CharField(blank=True, max_length=100),
        ),
        migrations.RunPython(invocations_by_caller, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="historicaltool",
            name="enabled",
            field=models.BooleanField(
                default=False,
                help_text="Disabled tools are refused to every agent and tool step.",
            ),
        ),
        migrations.AlterField(
            model_name="tool",
            name="enabled",
            field=models.BooleanField(
                default=False,
                help_text="Disabled tools are refused to every agent and tool step.",
            ),
        ),
        migrations.AddField(
            model_name="ratecounter",
            name="caller",
            field=models.CharField(
                default="",
                help_text="Who calls: agent:<id>, user:<id> or system.",
                max_length=64,
            ),
            preserve_default=False,
        ),
        migrations.RunPython(counters_by_caller, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name="ratecounter",
            name="rate_counter_unique",
        ),
        migrations.RemoveField(
            model_name="ratecounter",
            name="agent",
        ),
        migrations.AddConstraint(
            model_name="ratecounter",
            constraint=models.UniqueConstraint(
                fields=("caller", "tool", "window_start"), name="rate_counter_caller_unique"
            ),
        ),
    ]
