"""`manage.py reencrypt_secrets`: move every ciphertext to the newest key."""

from django.core.management.base import BaseCommand, CommandError

from rotation.crypto import CryptoError
from rotation.reencryption import secrets_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted value with the first key of FIELD_ENCRYPTION_KEYS. "
        "Safe to interrupt and re-run; afterwards older keys can be removed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--chunk-size", type=int, default=500)

    def handle(self, *args, chunk_size: int, **options):
        try:
            result = secrets_reencrypt(chunk_size=chunk_size)
        except CryptoError as exc:
            raise CommandError(f"stopped: {exc}") from None
        self.stdout.write(
            f"Re-encrypted {result.installations} access tokens and "
            f"{result.credential_versions} credential versions; "
            f"{result.already_current} were already under the newest key."
        )
