"""`manage.py switch_endpoint`: the admin action's twin (same service, same permission)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from rotation.models import Installation
from rotation.services import RotationRefused
from rotation.services.endpoints import installations_switch_endpoint


class Command(BaseCommand):
    help = (
        "Switch installations (icfg_... ids) to Vercel's current or deprecated Update Resource "
        "Secrets endpoint."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("installation_ids", nargs="+", metavar="ICFG")
        parser.add_argument("--to", required=True, choices=Installation.Endpoint.values)
        parser.add_argument("--actor", required=True, help="username the switch is made as")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            actor = get_user_model().objects.get_by_natural_key(options["actor"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user {options['actor']!r}") from None
        wanted = list(dict.fromkeys(options["installation_ids"]))
        found = dict(
            Installation.objects.filter(vercel_id__in=wanted).values_list("vercel_id", "pk")
        )
        unknown = [vercel_id for vercel_id in wanted if vercel_id not in found]
        if unknown:
            raise CommandError(
                "; ".join(f"{vercel_id}: no such installation" for vercel_id in unknown)
                + "; nothing switched"
            )
        try:
            result = installations_switch_endpoint(
                installation_ids=[found[vercel_id] for vercel_id in wanted],
                to=options["to"],
                actor=actor,
                source="cli",
            )
        except RotationRefused as exc:
            raise CommandError(exc.message) from None
        for vercel_id in result.switched:
            self.stdout.write(f"{vercel_id}: switched to {result.to}")
        for vercel_id in result.unchanged:
            self.stdout.write(f"{vercel_id}: already {result.to}")
