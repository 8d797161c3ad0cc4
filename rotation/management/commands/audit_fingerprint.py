"""`manage.py audit_fingerprint`: the keyed fingerprint of a value read on stdin."""

import getpass
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from rotation.audit import AuditAction, audit_record, fingerprint


class Command(BaseCommand):
    help = (
        "Read one value on stdin (not an argument, so it stays out of shell history and ps) "
        "and print its HMAC-SHA256 fingerprint, to search audit event details for it."
    )

    def handle(self, *args, **options):
        value = sys.stdin.read()
        # Only the line ending added by `echo` or a terminal; other whitespace is the value.
        if value.endswith("\r\n"):
            value = value[:-2]
        elif value.endswith("\n"):
            value = value[:-1]
        if not value:
            raise CommandError("no value on stdin")
        with transaction.atomic():
            audit_record(
                action=AuditAction.AUDIT_FINGERPRINTED,
                actor_username=f"os:{getpass.getuser()}"[:150],
                details={"command": "audit_fingerprint"},
            )
        self.stdout.write(fingerprint(value))
