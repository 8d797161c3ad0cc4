"""Installation token rotation, the inventory check and the dashboard notification: their
fields, the Support lead's new permissions, and the daily inventory schedule."""

import django.db.models.deletion
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

# Frozen as of this migration.
SUPPORT_LEAD = [
    ("rotation", "view_installation"),
    ("rotation", "view_resource"),
    ("rotation", "view_connectedproject"),
    ("rotation", "view_rotation"),
    ("rotation", "view_rotationbatch"),
    ("rotation", "rotate_resource"),
    ("rotation", "cancel_rotation"),
    ("rotation", "retry_rotation"),
    ("rotation", "confirm_redeploy"),
    ("rotation", "rotate_resource_emergency"),
    ("rotation", "rollback_rotation"),
    ("rotation", "switch_endpoint"),
    ("rotation", "rotate_installation_token"),
    ("rotation", "sync_vercel_resources"),
    ("rotation", "view_inventoryreport"),
    ("rotation", "view_inventoryfinding"),
]
# Same name as rotation.tasks_marketplace.INVENTORY_SCHEDULE_NAME.
INVENTORY_SCHEDULE_NAME = "rotation: daily inventory check against Vercel"


def grant_support_lead(apps, schema_editor):
    # Permissions are normally created after migrate; make sure the new ones exist now.
    app_config = apps.get_app_config("rotation")
    app_config.models_module = True
    create_permissions(app_config, verbosity=0, apps=apps)
    app_config.models_module = None
    from rotation.roles import roles_sync

    roles_sync(apps, {"Support lead": SUPPORT_LEAD})


def create_inventory_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name=INVENTORY_SCHEDULE_NAME,
        defaults={
            "func": "rotation.tasks_marketplace.inventory_check_all",
            "schedule_type": "D",  # daily
            "repeats": -1,
        },
    )


def delete_inventory_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=INVENTORY_SCHEDULE_NAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('rotation', '0012_resource_metadata_and_rotation_policy'),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.CreateModel(
            name='InventoryReport',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('source', models.CharField(choices=[('admin', 'Admin action'), ('cli', 'Command line'), ('schedule', 'Daily schedule')], max_length=16)),
                ('requested_by', models.CharField(blank=True, max_length=150)),
                ('installations', models.JSONField(blank=True, null=True)),
                ('started_at', models.DateTimeField(auto_now_add=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('installations_checked', models.PositiveIntegerField(default=0)),
                ('installations_failed', models.PositiveIntegerField(default=0)),
                ('differences', models.PositiveIntegerField(default=0)),
                ('changes_applied', models.PositiveIntegerField(default=0)),
            ],
            options={
                'ordering': ['-started_at', '-id'],
            },
        ),
        migrations.AlterModelOptions(
            name='installation',
            options={'ordering': ['vercel_id'], 'permissions': [('switch_endpoint', "Can switch an installation's secrets endpoint"), ('rotate_installation_token', "Can rotate installations' Vercel access tokens"), ('sync_vercel_resources', "Can check resources against Vercel's list")]},
        ),
        migrations.AddField(
            model_name='installation',
            name='previous_access_token_encrypted',
            field=models.BinaryField(default=b''),
        ),
        migrations.AddField(
            model_name='installation',
            name='previous_access_token_key_id',
            field=models.CharField(blank=True, editable=False, max_length=32),
        ),
        migrations.AddField(
            model_name='installation',
            name='token_rotation_attempts',
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='installation',
            name='token_rotation_error',
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name='installation',
            name='token_rotation_lease_until',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='installation',
            name='token_rotation_next_attempt_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='installation',
            name='token_rotation_requested_by',
            field=models.CharField(blank=True, max_length=150),
        ),
        migrations.AddField(
            model_name='installation',
            name='token_rotation_step',
            field=models.CharField(blank=True, choices=[('', '—'), ('requested', 'Requested (rotate next)'), ('rotated', 'New token stored (check it next)'), ('verified', 'New token works (revoke the old one next)')], default='', max_length=16),
        ),
        migrations.AddField(
            model_name='rotation',
            name='notification_attempts',
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='rotation',
            name='notification_error',
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name='rotation',
            name='notification_next_attempt_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='rotation',
            name='notification_state',
            field=models.CharField(blank=True, choices=[('', '—'), ('setting', 'Being set'), ('set', 'Shown to the customer'), ('clearing', 'Being cleared'), ('cleared', 'Cleared'), ('failed', 'Failed (see the error)')], default='', max_length=16),
        ),
        migrations.AddField(
            model_name='rotation',
            name='notification_wanted',
            field=models.CharField(blank=True, max_length=8),
        ),
        migrations.AlterField(
            model_name='resource',
            name='status',
            field=models.CharField(choices=[('ready', 'Ready'), ('suspended', 'Suspended'), ('removed', 'Removed'), ('pending', 'Pending'), ('onboarding', 'Onboarding'), ('resumed', 'Resumed'), ('uninstalled', 'Uninstalled'), ('error', 'Error')], default='ready', max_length=16),
        ),
        migrations.CreateModel(
            name='InventoryFinding',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('installation_ref', models.CharField(max_length=64, verbose_name='installation')),
                ('resource_ref', models.CharField(blank=True, max_length=128, verbose_name='resource')),
                ('kind', models.CharField(choices=[('unknown', 'On Vercel, unknown to us'), ('missing', 'Ours, missing on Vercel'), ('name', 'Name changed'), ('product', 'Product changed'), ('status', 'Status changed'), ('error', 'Installation not checked (Vercel error)')], max_length=16)),
                ('ours', models.CharField(blank=True, max_length=200)),
                ('theirs', models.CharField(blank=True, max_length=200, verbose_name='on Vercel')),
                ('applied', models.BooleanField(default=False)),
                ('message', models.TextField(blank=True)),
                ('report', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='findings', to='rotation.inventoryreport')),
            ],
            options={
                'ordering': ['report_id', 'installation_ref', 'resource_ref', 'id'],
                'indexes': [models.Index(fields=['installation_ref'], name='rotation_in_install_afaf33_idx')],
            },
        ),
        migrations.RunPython(grant_support_lead, migrations.RunPython.noop),
        migrations.RunPython(create_inventory_schedule, delete_inventory_schedule),
    ]
