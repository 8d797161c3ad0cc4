"""Installations, their resources and the encrypted credential versions of each resource."""

from __future__ import annotations

import json
import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from rotation import crypto


class TokenRotationStep(models.TextChoices):
    """Where an installation's token rotation stands; empty when none is running."""

    NONE = "", "—"
    REQUESTED = "requested", "Requested (rotate next)"
    ROTATED = "rotated", "New token stored (check it next)"
    VERIFIED = "verified", "New token works (revoke the old one next)"


class Installation(models.Model):
    """A Vercel integration configuration (`icfg_...`) of one customer team."""

    class Endpoint(models.TextChoices):
        CURRENT = "current", "Current: /v1/installations/{id}/resources/{id}/secrets"
        DEPRECATED = "deprecated", "Deprecated: …/products/{product}/resources/{id}/secrets"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        REMOVED = "removed", "Removed on Vercel"

    vercel_id = models.CharField("integration configuration id", max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True)
    team_id = models.CharField("team id", max_length=64, blank=True)
    contact_email = models.EmailField(blank=True)
    endpoint = models.CharField(
        "secrets endpoint", max_length=16, choices=Endpoint, default=Endpoint.CURRENT
    )
    status = models.CharField(max_length=16, choices=Status, default=Status.ACTIVE)
    access_token_encrypted = models.BinaryField(default=b"", editable=False)
    access_token_key_id = models.CharField(max_length=32, blank=True, editable=False)
    access_token_set_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Token rotation (rotation.services.installation_tokens): the old token stays stored,
    # encrypted, until Vercel confirms its revocation; the step says where to resume.
    previous_access_token_encrypted = models.BinaryField(default=b"", editable=False)
    previous_access_token_key_id = models.CharField(max_length=32, blank=True, editable=False)
    token_rotation_step = models.CharField(
        max_length=16, choices=TokenRotationStep, blank=True, default=""
    )
    token_rotation_requested_by = models.CharField(max_length=150, blank=True)
    token_rotation_lease_until = models.DateTimeField(null=True, blank=True)
    token_rotation_next_attempt_at = models.DateTimeField(null=True, blank=True)
    token_rotation_attempts = models.PositiveIntegerField(default=0)
    token_rotation_error = models.TextField(blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["vercel_id"]
        indexes = [models.Index(fields=["team_id"]), models.Index(fields=["name"])]
        permissions = [
            ("switch_endpoint", "Can switch an installation's secrets endpoint"),
            ("rotate_installation_token", "Can rotate installations' Vercel access tokens"),
            ("sync_vercel_resources", "Can check resources against Vercel's list"),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.vercel_id} ({self.vercel_id})"

    def _token_aad(self) -> bytes:
        return crypto.associated_data("rotation_installation", self.pk, "access_token")

    @property
    def has_access_token(self) -> bool:
        return bool(self.access_token_encrypted)

    def set_access_token(self, token: str) -> None:
        """Encrypt `token` into this (saved) row; the caller saves the three token fields."""
        if not token:
            raise ValueError("the access token must not be empty")
        self.access_token_encrypted = crypto.encrypt(token.encode(), aad=self._token_aad())
        self.access_token_key_id = crypto.key_id_of(self.access_token_encrypted)
        self.access_token_set_at = timezone.now()

    def access_token(self) -> str:
        """The decrypted bearer token; raises CryptoError when it cannot be read."""
        if not self.access_token_encrypted:
            raise crypto.CryptoError(f"installation {self.vercel_id} has no access token")
        return crypto.decrypt(self.access_token_encrypted, aad=self._token_aad()).decode()

    def _previous_token_aad(self) -> bytes:
        return crypto.associated_data("rotation_installation", self.pk, "previous_access_token")

    def keep_previous_access_token(self, token: str) -> None:
        """Encrypt the token being replaced into this row, until its revocation."""
        self.previous_access_token_encrypted = crypto.encrypt(
            token.encode(), aad=self._previous_token_aad()
        )
        self.previous_access_token_key_id = crypto.key_id_of(self.previous_access_token_encrypted)

    def previous_access_token(self) -> str:
        """The decrypted replaced token; raises CryptoError when it cannot be read."""
        if not self.previous_access_token_encrypted:
            raise crypto.CryptoError(f"installation {self.vercel_id} has no previous token")
        return crypto.decrypt(
            self.previous_access_token_encrypted, aad=self._previous_token_aad()
        ).decode()

    def forget_previous_access_token(self) -> None:
        """Wipe the replaced token (Vercel confirmed it is revoked)."""
        self.previous_access_token_encrypted = b""
        self.previous_access_token_key_id = ""


class Resource(models.Model):
    """A Marketplace resource (e.g. one database) whose secrets we push to Vercel."""

    class Status(models.TextChoices):
        READY = "ready", "Ready"
        SUSPENDED = "suspended", "Suspended"
        REMOVED = "removed", "Removed"
        # Further statuses Vercel reports (applied by the inventory check).
        PENDING = "pending", "Pending"
        ONBOARDING = "onboarding", "Onboarding"
        RESUMED = "resumed", "Resumed"
        UNINSTALLED = "uninstalled", "Uninstalled"
        ERROR = "error", "Error"

    installation = models.ForeignKey(
        Installation, on_delete=models.PROTECT, related_name="resources"
    )
    vercel_id = models.CharField("resource id", max_length=128)
    product = models.CharField("product id or slug", max_length=128)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status, default=Status.READY)
    # [{"name": "DATABASE_URL", "prefix": "", "environments": ["production", ...]}]
    secret_template = models.JSONField(default=list, blank=True)
    # What the product's provider needs to find the resource, e.g. {"role": ..., "database":
    # ...} for PostgreSQL (see rotation.providers.declarations). Never a secret.
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["installation_id", "vercel_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["installation", "vercel_id"], name="resource_unique_per_installation"
            )
        ]
        indexes = [
            models.Index(fields=["vercel_id"]),
            models.Index(fields=["product"]),
            models.Index(fields=["status"]),
            models.Index(fields=["name"]),
            # The resource list sorted by last change, a page at a time.
            models.Index(fields=["updated_at"], name="resource_updated_idx"),
        ]
        permissions = [
            ("rotate_resource", "Can rotate credentials and push them to Vercel"),
            ("rotate_resource_emergency", "Can run emergency rotations (expire old at once)"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.vercel_id})"


class ConnectedProject(models.Model):
    """A Vercel project that uses a resource; Vercel has no API to list them."""

    class Source(models.TextChoices):
        WEBHOOK = "webhook", "Vercel webhook"
        MANUAL = "manual", "Entered by staff"
        IMPORT = "import", "Import"

    resource = models.ForeignKey(
        Resource, on_delete=models.CASCADE, related_name="connected_projects"
    )
    project_id = models.CharField(max_length=64)
    source = models.CharField(max_length=16, choices=Source, default=Source.MANUAL)
    connected_at = models.DateTimeField(default=timezone.now)
    disconnected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["resource_id", "project_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["resource", "project_id"], name="connected_project_unique"
            )
        ]

    def __str__(self) -> str:
        return self.project_id


class CredentialVersion(models.Model):
    """One encrypted secret set of a resource; stages follow AWS Secrets Manager."""

    class Stage(models.TextChoices):
        PENDING = "pending", "Pending"
        CURRENT = "current", "Current"
        PREVIOUS = "previous", "Previous (still valid)"
        # Taken out of use; expiry at the provider not yet confirmed (still valid until then).
        RETIRING = "retiring", "Retiring (expiry at the provider pending)"
        EXPIRED = "expired", "Expired"

    # A UUID known before the insert lets the ciphertext be bound to its own row.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    resource = models.ForeignKey(
        Resource, on_delete=models.PROTECT, related_name="credential_versions"
    )
    rotation = models.ForeignKey(
        "Rotation",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="credential_versions",
    )
    stage = models.CharField(max_length=16, choices=Stage, default=Stage.PENDING)
    secrets_encrypted = models.BinaryField(default=b"", editable=False)
    key_id = models.CharField(max_length=32, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    stage_changed_at = models.DateTimeField(default=timezone.now)
    expired_at = models.DateTimeField(null=True, blank=True)
    # Retiring: why, for which rotation, and until when a worker holds the provider call
    # (after a failure: when to try again). See rotation.providers.retirement.
    retire_reason = models.CharField(max_length=64, blank=True)
    retired_by = models.ForeignKey(
        "Rotation",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="retired_versions",
    )
    retire_lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["resource"],
                condition=Q(stage="pending"),
                name="credential_one_pending_per_resource",
            ),
            models.UniqueConstraint(
                fields=["resource"],
                condition=Q(stage="current"),
                name="credential_one_current_per_resource",
            ),
            models.UniqueConstraint(
                fields=["resource"],
                condition=Q(stage="previous"),
                name="credential_one_previous_per_resource",
            ),
        ]
        indexes = [
            models.Index(fields=["resource", "stage"]),
            # The periodic retry scans only the few versions still retiring.
            models.Index(
                fields=["retire_lease_until"],
                condition=Q(stage="retiring"),
                name="credential_retiring_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.resource_id} {self.stage} {str(self.id)[:8]}"

    def _aad(self) -> bytes:
        return crypto.associated_data("rotation_credentialversion", self.pk, "secret_set")

    def seal(self, secrets: list[dict]) -> None:
        """Encrypt the secret set (Vercel's `secrets` list) into this row."""
        payload = json.dumps(secrets, separators=(",", ":"), sort_keys=True).encode()
        self.secrets_encrypted = crypto.encrypt(payload, aad=self._aad())
        self.key_id = crypto.key_id_of(self.secrets_encrypted)

    def secrets(self) -> list[dict]:
        """The decrypted secret set; raises CryptoError when it cannot be read."""
        if not self.secrets_encrypted:
            raise crypto.CryptoError(f"credential version {self.pk} holds no secrets (wiped)")
        return json.loads(crypto.decrypt(self.secrets_encrypted, aad=self._aad()))

    def wipe(self) -> None:
        """Forget the ciphertext (after the credentials were expired at the provider)."""
        self.secrets_encrypted = b""
        self.key_id = ""
