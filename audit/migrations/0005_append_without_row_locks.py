"""Lighter appends: no foreign key checks from bodies and leaves, one index on the action.

* The foreign keys from audit_auditbody and audit_auditleaf to audit_auditentry are dropped
  (the fields stay relations for the ORM). A foreign key's check locks the referenced entry's
  row when the referencing row commits: a second write to every entry, for a reference that
  cannot dangle, since a body is written with the id its entry was just given, a leaf with the
  id the sequencer just read, and migration 0002 refuses every DELETE of an entry. If those
  triggers are bypassed, audit_verify names the entry missing under its leaf.
* The action had two indexes (db_index on a CharField: a plain one and a pattern-matching
  one). The pattern-matching one serves equality as well, so the plain one goes; on PostgreSQL
  the other is renamed rather than rebuilt, so that upgrading a large trail does not block
  writers while an index builds.
"""

from django.db import migrations, models

PLAIN_ACTION_INDEX = "audit_auditentry_action_dee621eb"
PATTERN_ACTION_INDEX = "audit_auditentry_action_dee621eb_like"
NEW_INDEX = models.Index(fields=["action"], name="audit_action_idx", opclasses=["varchar_pattern_ops"])


def keep_one_action_index(apps, schema_editor):
    """Drop the plain action index; keep the pattern-matching one under the model's name."""
    quote = schema_editor.quote_name
    schema_editor.execute(f"DROP INDEX IF EXISTS {quote(PLAIN_ACTION_INDEX)}")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"ALTER INDEX {quote(PATTERN_ACTION_INDEX)} RENAME TO {quote(NEW_INDEX.name)}"
        )
    else:  # SQLite has no pattern-matching index: build the model's one
        schema_editor.add_index(apps.get_model("audit", "AuditEntry"), NEW_INDEX)


def restore_both_action_indexes(apps, schema_editor):
    """Undo keep_one_action_index."""
    quote = schema_editor.quote_name
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"ALTER INDEX {quote(NEW_INDEX.name)} RENAME TO {quote(PATTERN_ACTION_INDEX)}"
        )
    else:
        schema_editor.execute(f"DROP INDEX IF EXISTS {quote(NEW_INDEX.name)}")
    schema_editor.execute(
        f"CREATE INDEX {quote(PLAIN_ACTION_INDEX)} ON audit_auditentry ({quote('action')})"
    )


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_leaner_indexes")]

    operations = [
        migrations.AlterField(
            model_name="auditbody",
            name="entry",
            field=models.OneToOneField(
                db_constraint=False,
                on_delete=models.deletion.DO_NOTHING,
                primary_key=True,
                related_name="body_row",
                serialize=False,
                to="audit.auditentry",
            ),
        ),
        migrations.AlterField(
            model_name="auditleaf",
            name="entry",
            field=models.OneToOneField(
                db_constraint=False,
                on_delete=models.deletion.DO_NOTHING,
                related_name="leaf",
                to="audit.auditentry",
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="auditentry",
                    name="action",
                    field=models.CharField(max_length=100),
                ),
                migrations.AddIndex(model_name="auditentry", index=NEW_INDEX),
            ],
            database_operations=[
                migrations.RunPython(keep_one_action_index, restore_both_action_indexes)
            ],
        ),
    ]
