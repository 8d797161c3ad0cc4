"""Rotation policies: the maximum credential age per product."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from rotation.models.resources import Resource


class RotationPolicy(models.Model):
    """A product's maximum credential age; products without one use `ROTATION_MAX_AGE_DAYS`."""

    product = models.CharField("product id or slug", max_length=128, unique=True)
    max_age_days = models.PositiveIntegerField(
        "maximum credential age (days)",
        help_text="Credentials older than this are rotated by the daily policy run; 0 = off.",
    )
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["product"]
        verbose_name_plural = "rotation policies"

    def __str__(self) -> str:
        return f"{self.product}: {self.max_age_days or 'off'} days"

    @staticmethod
    def default_days() -> int:
        return settings.ROTATION_MAX_AGE_DAYS


class CredentialAge(Resource):
    """Resources seen for compliance: how old their credentials are against the policy."""

    class Meta:
        proxy = True
        verbose_name = "credential age"
        verbose_name_plural = "credential ages"
