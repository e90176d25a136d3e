"""The duration histogram (KpiDurationDay) and KpiRunEnd's day, filled from the existing rows."""

import datetime as dt
from collections import Counter

import django.db.models.deletion
from django.db import migrations, models
from django.db.models.functions import TruncDate


def fill(apps, schema_editor):
    """Give every KpiRunEnd its UTC day and count the histogram from them."""
    from orchestrator.kpis import duration_bucket

    KpiRunEnd = apps.get_model("orchestrator", "KpiRunEnd")
    KpiDurationDay = apps.get_model("orchestrator", "KpiDurationDay")
    KpiRunEnd.objects.update(day=TruncDate("finished_at", tzinfo=dt.UTC))
    counts: Counter = Counter()
    rows = KpiRunEnd.objects.values_list("workflow_id", "day", "duration_seconds")
    for workflow_id, day, seconds in rows.iterator(5000):
        counts[(workflow_id, day, duration_bucket(seconds))] += 1
    KpiDurationDay.objects.bulk_create(
        [KpiDurationDay(workflow_id=w, day=d, bucket=b, count=n) for (w, d, b), n in counts.items()],
        2000,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("orchestrator", "0010_kpi_people_acks_agents"),
    ]

    operations = [
        migrations.CreateModel(
            name="KpiDurationDay",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("bucket", models.SmallIntegerField()),
                ("count", models.IntegerField(default=0)),
                (
                    "workflow",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="orchestrator.workflow",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("workflow", "day", "bucket"), name="kpi_duration_day_unique"
                    )
                ],
            },
        ),
        migrations.AddField(
            model_name="kpirunend",
            name="day",
            field=models.DateField(
                null=True, help_text="The UTC day of its end (the duration histogram's day)."
            ),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="kpirunend",
            name="day",
            field=models.DateField(
                help_text="The UTC day of its end (the duration histogram's day)."
            ),
        ),
        migrations.RemoveIndex(model_name="kpirunend", name="kpi_run_end_wf_idx"),
        migrations.AddIndex(
            model_name="kpirunend",
            index=models.Index(
                fields=["day", "duration_seconds", "workflow"], name="kpi_run_end_day_dur_idx"
            ),
        ),
    ]
