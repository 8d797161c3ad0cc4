"""Re-encrypt every encrypted value with the newest key of the ring, in chunks.

Each chunk commits on its own, so an interrupted run keeps its progress and a re-run only
touches what is still sealed with an older key.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from rotation import crypto
from rotation.audit import AuditAction, audit_record
from rotation.models import CredentialVersion, Installation


@dataclass
class ReencryptResult:
    installations: int = 0
    credential_versions: int = 0
    already_current: int = 0


def _reencrypt_table(model, field: str, key_field: str, aad_for, chunk_size: int) -> tuple:
    ring = crypto.default_key_ring()
    moved = kept = 0
    last_pk = None
    while True:
        queryset = model.objects.exclude(**{field: b""}).order_by("pk")
        if last_pk is not None:
            queryset = queryset.filter(pk__gt=last_pk)
        pks = list(queryset.values_list("pk", flat=True)[:chunk_size])
        if not pks:
            return moved, kept
        with transaction.atomic():
            for row in model.objects.select_for_update().filter(pk__in=pks).order_by("pk"):
                blob = bytes(getattr(row, field))
                if not blob or not crypto.needs_reencryption(blob, ring):
                    kept += 1
                    continue
                aad = aad_for(row)
                plaintext = crypto.decrypt(blob, aad=aad, ring=ring)
                sealed = crypto.encrypt(plaintext, aad=aad, ring=ring)
                setattr(row, field, sealed)
                setattr(row, key_field, ring.primary_id)
                row.save(update_fields=[field, key_field])
                moved += 1
        last_pk = pks[-1]


def secrets_reencrypt(*, chunk_size: int = 500) -> ReencryptResult:
    """Move every ciphertext to the primary key; returns counts."""
    result = ReencryptResult()
    result.installations, kept_installations = _reencrypt_table(
        Installation,
        "access_token_encrypted",
        "access_token_key_id",
        lambda row: row._token_aad(),
        chunk_size,
    )
    result.credential_versions, kept_versions = _reencrypt_table(
        CredentialVersion, "secrets_encrypted", "key_id", lambda row: row._aad(), chunk_size
    )
    result.already_current = kept_installations + kept_versions
    with transaction.atomic():
        audit_record(
            action=AuditAction.SECRETS_REENCRYPTED,
            details={
                "key_id": crypto.default_key_ring().primary_id,
                "installations": result.installations,
                "credential_versions": result.credential_versions,
                "already_current": result.already_current,
            },
        )
    return result
