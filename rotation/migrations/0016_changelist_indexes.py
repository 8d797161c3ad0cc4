"""Changelist and bulk-insert indexes: sort indexes for the resource and rotation lists; drop
Rotation's single-column indexes on batch_id and resource_id.

(batch, state) and (resource, created_at) lead with those columns, and every index less makes
the bulk insert of a large batch cheaper. Not a plain AlterField(db_index=False): Django's
schema editor would drop every single-column index on the column, the partial unique index
of `rotation_one_open_per_resource` included.
"""

import django.db.models.deletion
from django.db import migrations, models

COLUMNS = ("batch_id", "resource_id")


def _plain_indexes(schema_editor, model, column):
    """The index db_index=True made on `column`: not unique, not named in Meta."""
    named = {index.name for index in model._meta.indexes}
    named |= {constraint.name for constraint in model._meta.constraints}
    return schema_editor._constraint_names(
        model, [column], index=True, unique=False, type_=models.Index.suffix, exclude=named
    )


def drop_indexes(apps, schema_editor):
    model = apps.get_model("rotation", "Rotation")
    for column in COLUMNS:
        for name in _plain_indexes(schema_editor, model, column):
            schema_editor.execute(schema_editor._delete_index_sql(model, name))


def create_indexes(apps, schema_editor):
    model = apps.get_model("rotation", "Rotation")
    for column in COLUMNS:
        field = model._meta.get_field(column.removesuffix("_id"))
        if not _plain_indexes(schema_editor, model, column):
            schema_editor.execute(schema_editor._create_index_sql(model, fields=[field]))


# The resource and rotation lists sorted by last change, a page at a time.
SORT_INDEXES = [
    ("rotation", "state_changed_at", "state_changed"),
    ("resource", "updated_at", "updated"),
]
FOREIGN_KEYS = {"batch": "rotation.rotationbatch", "resource": "rotation.resource"}


class Migration(migrations.Migration):
    dependencies = [
        ("rotation", "0015_push_pace"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="rotation",
                    name=name,
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="rotations",
                        to=to,
                    ),
                )
                for name, to in FOREIGN_KEYS.items()
            ],
            database_operations=[migrations.RunPython(drop_indexes, create_indexes)],
        ),
        *[
            migrations.AddIndex(
                model_name=model, index=models.Index(fields=[column], name=f"{model}_{name}_idx")
            )
            for model, column, name in SORT_INDEXES
        ],
    ]
