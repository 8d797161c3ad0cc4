"""`manage.py rotate_installation_tokens`: the admin action's twin (same service, same
permission), then runs the steps here rather than waiting for a worker."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rotation.management.arguments import installation_pks, user_named
from rotation.models import Installation
from rotation.services import RotationRefused
from rotation.services.installation_tokens import (
    installation_token_advance,
    installation_tokens_rotate_request,
)


class Command(BaseCommand):
    help = (
        "Rotate installations' Vercel access tokens (icfg_... ids): rotate, store the new "
        "token encrypted, check it, revoke the old one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("installation_ids", nargs="+", metavar="ICFG")
        parser.add_argument("--actor", required=True, help="username the request is made as")

    def handle(self, *args: Any, **options: Any) -> None:
        actor = user_named(options["actor"])
        known = installation_pks(options["installation_ids"])
        try:
            result = installation_tokens_rotate_request(
                installation_ids=list(known.values()),
                actor=actor,
                origin=None,
            )
        except RotationRefused as exc:
            raise CommandError(exc.message) from None
        for vercel_id, reason in result.refused:
            self.stderr.write(f"refused {vercel_id}: {reason}")
        stopped = []
        for vercel_id in result.started:
            step = installation_token_advance(installation_id=known[vercel_id])
            if step:
                error = Installation.objects.get(pk=known[vercel_id]).token_rotation_error
                self.stderr.write(f"{vercel_id}: stopped at {step}: {error}")
                stopped.append(vercel_id)
            else:
                self.stdout.write(f"{vercel_id}: rotated, old token revoked")
        if stopped or result.refused:
            raise CommandError(
                f"{len(result.started) - len(stopped)} rotated, {len(stopped)} stopped, "
                f"{len(result.refused)} refused"
            )
