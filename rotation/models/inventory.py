"""Inventory checks: our resources compared with the list Vercel holds for each installation."""

from __future__ import annotations

from django.db import models


class InventoryReport(models.Model):
    """One run of the inventory check (`manage.py sync_vercel_resources`, admin, schedule)."""

    class Source(models.TextChoices):
        ADMIN = "admin", "Admin action"
        CLI = "cli", "Command line"
        SCHEDULE = "schedule", "Daily schedule"

    source = models.CharField(max_length=16, choices=Source)
    requested_by = models.CharField(max_length=150, blank=True)
    # The installations asked for (Vercel ids); null: every active installation.
    installations = models.JSONField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    installations_checked = models.PositiveIntegerField(default=0)
    installations_failed = models.PositiveIntegerField(default=0)
    differences = models.PositiveIntegerField(default=0)
    changes_applied = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"Inventory check #{self.pk}"


class InventoryFinding(models.Model):
    """One difference found (or one installation that could not be checked)."""

    class Kind(models.TextChoices):
        UNKNOWN = "unknown", "On Vercel, unknown to us"
        MISSING = "missing", "Ours, missing on Vercel"
        NAME = "name", "Name changed"
        PRODUCT = "product", "Product changed"
        STATUS = "status", "Status changed"
        ERROR = "error", "Installation not checked (Vercel error)"

    report = models.ForeignKey(InventoryReport, on_delete=models.CASCADE, related_name="findings")
    installation_ref = models.CharField("installation", max_length=64)
    resource_ref = models.CharField("resource", max_length=128, blank=True)
    kind = models.CharField(max_length=16, choices=Kind)
    ours = models.CharField(max_length=200, blank=True)
    theirs = models.CharField("on Vercel", max_length=200, blank=True)
    applied = models.BooleanField(default=False)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["report_id", "installation_ref", "resource_ref", "id"]
        indexes = [models.Index(fields=["installation_ref"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.installation_ref} {self.resource_ref}"
