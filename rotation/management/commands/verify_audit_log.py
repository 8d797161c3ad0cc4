"""`manage.py verify_audit_log`: check the audit hash chain; exit 1 naming the first bad event."""

from django.core.management.base import BaseCommand, CommandError

from rotation.audit.verify import audit_log_verify


class Command(BaseCommand):
    help = (
        "Recompute the audit trail's hash chain in id order. Exit 0 with the event count when "
        "intact; exit 1 naming the first modified, inserted, reordered or deleted event."
    )

    def add_arguments(self, parser):
        parser.add_argument("--chunk-size", type=int, default=5000)
        parser.add_argument(
            "--anchor",
            default="",
            help="a head hash printed by an earlier run; fail if no event has it (truncation)",
        )

    def handle(self, *args, chunk_size: int, anchor: str, **options):
        report = audit_log_verify(chunk_size=max(chunk_size, 2), anchor=anchor.strip())
        if not report.intact:
            where = f"first bad event: #{report.bad_event_id} " if report.bad_event_id else ""
            raise CommandError(
                f"audit chain broken after {report.count} good events; {where}"
                f"({report.problem}): {report.message}",
                returncode=1,
            )
        self.stdout.write(
            f"audit chain intact: {report.count} events; last event #{report.last_id}; "
            f"head hash {report.head_hash}"
        )
