"""The duration histogram (KpiDurationDay) and KpiRunEnd's day, filled from the existing rows."""

import datetime as dt
from collections import Counter

import django.db.models.deletion
from django.db import migrations, models


def fill(apps, schema_editor):
    """Give every KpiRunEnd its UTC day and count the histogram from them."""
    from orchestrator.kpis import duration_bucket

    KpiRunEnd = apps.get_model("orchestrator", "KpiRunEnd")
    KpiDurationDay = apps.get_model("orchestrator", "KpiDurationDay")
    counts: Counter = Counter()
    batch = []
    rows = KpiRunEnd.objects.order_by("pk").only(
        "pk", "workflow_id", "finished_at", "duration_seconds"
    )
    for end in rows.iterator(2000):
        end.day = end.finished_at.astimezone(dt.UTC).date()
        counts[(end.workflow_id, end.day, duration_bucket(end.duration_seconds))] += 1
        batch.append(end)
        if len(batch) >= 2000:
            KpiRunEnd.objects.bulk_update(batch, ["day"])
            batch = []
    KpiRunEnd.objects.bulk_update(batch, ["day"])
    KpiDurationDay.objects.bulk_create(
        [
            KpiDurationDay(workflow_id=w, day=d, bucket=b, count=n)
            for (w, d, b), n in counts.items()
        ],
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
