"""`manage.py verify_audit_log`: check the audit chain against itself and the anchor's signed
checkpoints; exit 1 naming the first bad event or checkpoint."""

import os

from django.core.management.base import BaseCommand, CommandError

from rotation.audit.anchors import AnchorError, anchor_label
from rotation.audit.checkpoints import CheckpointInvalid, checkpoints_read
from rotation.audit.verify import audit_log_verify


class Command(BaseCommand):
    help = (
        "Recompute the audit trail's keyed hash chain in id order and check it against every "
        "signed checkpoint in AUDIT_ANCHOR_URL. Exit 0 with the event count when intact; exit 1 "
        "naming the first modified, inserted, reordered or deleted event, a truncated tail, or "
        "a checkpoint whose signature does not match."
    )

    def add_arguments(self, parser):
        parser.add_argument("--chunk-size", type=int, default=5000)
        parser.add_argument(
            "--processes",
            type=int,
            default=os.cpu_count() or 1,
            help="processes hashing pages at once on PostgreSQL (default: one per CPU)",
        )
        parser.add_argument(
            "--anchor",
            default="",
            help="a head hash printed by an earlier run; fail if no event has it (truncation)",
        )

    def handle(self, *args, chunk_size: int, processes: int, anchor: str, **options):
        try:
            checkpoints = checkpoints_read()
        except CheckpointInvalid as exc:
            raise CommandError(
                f"audit anchor {anchor_label()} refused (checkpoint_signature): {exc}",
                returncode=1,
            ) from None
        except AnchorError as exc:
            raise CommandError(f"audit anchor unusable: {exc}", returncode=1) from None
        report = audit_log_verify(
            chunk_size=max(chunk_size, 2),
            anchor=anchor.strip(),
            checkpoints=checkpoints,
            processes=max(processes, 1),
        )
        if not report.intact:
            where = f"first bad event: #{report.bad_event_id} " if report.bad_event_id else ""
            raise CommandError(
                f"audit chain broken after {report.count} good events; {where}"
                f"({report.problem}): {report.message}",
                returncode=1,
            )
        self.stdout.write(
            f"audit chain intact: {report.count} events; last event #{report.last_id}; "
            f"{report.checkpoints} of {len(checkpoints)} checkpoints in {anchor_label()} "
            f"matched; head hash {report.head_hash}"
        )
