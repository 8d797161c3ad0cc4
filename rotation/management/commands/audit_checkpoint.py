"""`manage.py audit_checkpoint`: sign the audit chain's head and append it to the anchor."""

from django.core.management.base import BaseCommand, CommandError

from rotation.audit.anchors import AnchorError, anchor_label
from rotation.audit.checkpoints import audit_checkpoint_write


class Command(BaseCommand):
    help = (
        "Write a signed checkpoint of the audit chain's head (last id, hash, event count, time) "
        "to AUDIT_ANCHOR_URL, as the hourly schedule does. Audited; exit 1 when the anchor "
        "cannot be written or no longer matches the chain."
    )

    def handle(self, *args, **options):
        try:
            checkpoint = audit_checkpoint_write(via="command")
        except AnchorError as exc:
            raise CommandError(f"no checkpoint written: {exc}", returncode=1) from None
        head = f"event #{checkpoint.last_id}" if checkpoint.last_id else "empty chain"
        self.stdout.write(
            f"checkpoint written to {anchor_label()}: {head}, {checkpoint.count} events, "
            f"hash {checkpoint.hash}, at {checkpoint.created_at}"
        )
