"""`manage.py sync_vercel_resources`: compare our resources with Vercel's list and reconcile."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rotation.management.arguments import installation_pks, user_named
from rotation.models import InventoryReport
from rotation.services import RotationRefused
from rotation.services.inventory import inventory_check


class Command(BaseCommand):
    help = (
        "List each installation's resources on Vercel and reconcile: apply name and status "
        "changes, mark resources missing on Vercel removed (never delete), report the rest."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--installation",
            action="append",
            metavar="ICFG",
            help="only this installation (repeatable); default: every active one",
        )
        parser.add_argument("--actor", help="username to record (checked for the permission)")

    def handle(self, *args: Any, **options: Any) -> None:
        actor = user_named(options["actor"]) if options["actor"] else None
        ids = None
        if options["installation"]:
            ids = list(installation_pks(options["installation"]).values())
        try:
            report = inventory_check(
                installation_ids=ids,
                source=InventoryReport.Source.CLI,
                actor=actor,
                origin=None,
            )
        except RotationRefused as exc:
            raise CommandError(exc.message) from None
        for finding in report.findings.all():
            applied = " (applied)" if finding.applied else ""
            detail = f"{finding.ours!r} -> {finding.theirs!r}" if finding.kind != "error" else ""
            self.stdout.write(
                f"{finding.installation_ref} {finding.resource_ref or '-'} {finding.kind}"
                f" {detail}{applied} {finding.message}".rstrip()
            )
        self.stderr.write(
            f"report {report.pk}: {report.installations_checked} checked, "
            f"{report.installations_failed} failed, {report.differences} difference(s), "
            f"{report.changes_applied} resource(s) updated"
        )
        if report.installations_failed:
            raise CommandError(f"{report.installations_failed} installation(s) not checked")
