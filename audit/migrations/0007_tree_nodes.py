"""Store the Merkle tree's perfect subtrees (AuditNode), append-only like the leaves.

A proof then reads O(log n) stored hashes instead of every leaf (audit/nodes.py). On PostgreSQL
the table gets the triggers of migration 0002 (audit_refuse_change): UPDATE, DELETE and TRUNCATE
are refused. A trail sequenced before this migration has nodes_size 0: the sequencer fills its
nodes in lazily, or `manage.py audit_build_nodes` does it at once (docs/audit.md); until then
its proofs are built from the leaves, as before.
"""

from django.db import migrations, models

FORWARD_SQL = [
    "CREATE TRIGGER audit_auditnode_append_only BEFORE UPDATE OR DELETE ON audit_auditnode "
    "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()",
    "CREATE TRIGGER audit_auditnode_no_truncate BEFORE TRUNCATE ON audit_auditnode "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()",
]
BACKWARD_SQL = [
    "DROP TRIGGER IF EXISTS audit_auditnode_append_only ON audit_auditnode",
    "DROP TRIGGER IF EXISTS audit_auditnode_no_truncate ON audit_auditnode",
]


def forwards(apps, schema_editor):
    """Make audit_auditnode append-only on PostgreSQL."""
    if schema_editor.connection.vendor != "postgresql":
        return
    for sql in FORWARD_SQL:
        schema_editor.execute(sql, None)


def backwards(apps, schema_editor):
    """Drop the triggers on PostgreSQL."""
    if schema_editor.connection.vendor != "postgresql":
        return
    for sql in BACKWARD_SQL:
        schema_editor.execute(sql, None)


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0006_verification_runs'),
    ]

    operations = [
        migrations.CreateModel(
            name='AuditNode',
            fields=[
                ('pk', models.CompositePrimaryKey('level', 'position', blank=True, editable=False, primary_key=True, serialize=False)),
                ('level', models.PositiveSmallIntegerField()),
                ('position', models.BigIntegerField(help_text='Index of the subtree among those of its level.')),
                ('hash', models.BinaryField(max_length=32)),
            ],
        ),
        migrations.AddField(
            model_name='audittreestate',
            name='nodes_size',
            field=models.BigIntegerField(default=0, help_text="Every perfect subtree within the first nodes_size leaves is stored (AuditNode); below size while an older trail's nodes are filled in."),
        ),
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
