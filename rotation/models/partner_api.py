"""What the partner API (Vercel calling us) remembers: the Idempotency-Keys it answered."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from rotation.models.resources import Installation, Resource
from rotation.models.rotations import Rotation


class PartnerApiIdempotencyKey(models.Model):
    """A request Vercel sent with an Idempotency-Key, and the answer it got.

    The same key with the same request gets the same answer and no second rotation; with
    another request it gets 409. Recorded in the transaction that creates the rotation, so
    a refused request leaves no key behind and Vercel's retry is judged afresh. Kept at least
    48 hours (pruned by the redeploy schedule).
    """

    installation = models.ForeignKey(
        Installation, on_delete=models.CASCADE, related_name="partner_api_keys"
    )
    key = models.CharField(max_length=255)
    resource = models.ForeignKey(
        Resource, on_delete=models.CASCADE, related_name="partner_api_keys"
    )
    # SHA-256 of the resource id and the canonical JSON body.
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField(default=dict)
    rotation = models.ForeignKey(
        Rotation, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["installation", "key"], name="partner_api_key_once_per_installation"
            )
        ]
        verbose_name = "partner API idempotency key"

    def __str__(self) -> str:
        return f"{self.key} ({self.installation_id})"
