"""Credential versions can be retiring (expiry at the provider not yet confirmed), with a
lease; rotations record a requested rollback that a task carries out."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("rotation", "0007_support_lead_role"),
    ]

    operations = [
        migrations.AddField(
            model_name="credentialversion",
            name="retire_lease_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="credentialversion",
            name="retire_reason",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="credentialversion",
            name="retired_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="retired_versions",
                to="rotation.rotation",
            ),
        ),
        migrations.AddField(
            model_name="rotation",
            name="rollback_attempts",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="rotation",
            name="rollback_queued_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="rotation",
            name="rollback_reason",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="rotation",
            name="rollback_requested_by",
            field=models.CharField(blank=True, max_length=150),
        ),
        migrations.AlterField(
            model_name="credentialversion",
            name="stage",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("current", "Current"),
                    ("previous", "Previous (still valid)"),
                    ("retiring", "Retiring (expiry at the provider pending)"),
                    ("expired", "Expired"),
                ],
                default="pending",
                max_length=16,
            ),
        ),
        migrations.AddIndex(
            model_name="credentialversion",
            index=models.Index(
                condition=models.Q(("stage", "retiring")),
                fields=["retire_lease_until"],
                name="credential_retiring_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="rotation",
            index=models.Index(
                condition=models.Q(("rollback_queued_at__isnull", False)),
                fields=["rollback_queued_at"],
                name="rotation_rollback_pending_idx",
            ),
        ),
    ]
