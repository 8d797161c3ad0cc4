"""`manage.py fake_vercel_request_rotation RESOURCE_ID`: the stand-in asks the portal to
rotate a resource, as Vercel does when a customer clicks "rotate" in its dashboard.

The running stand-in (`manage.py fake_vercel`) signs the request with its key, which the
portal checks through VERCEL_OIDC_JWKS_URL; this command only tells it what to send.
"""

from argparse import ArgumentParser
from typing import Any

import requests
from django.core.management.base import BaseCommand, CommandError

from rotation.devtools.fake_vercel.partner_calls import ROLES, TRIGGER_PATH
from rotation.models import Resource


class Command(BaseCommand):
    help = "Development: the Vercel stand-in asks the portal to rotate a resource's secrets."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("resource_id", help="the resource's Vercel id")
        parser.add_argument("--installation", default="", help="ICFG (default: from the database)")
        parser.add_argument("--reason", default="")
        parser.add_argument("--delay-hours", type=float, default=None)
        parser.add_argument("--role", choices=ROLES, default="ADMIN")
        parser.add_argument("--idempotency-key", default="")
        parser.add_argument("--fake-vercel-url", default="http://127.0.0.1:8765")
        parser.add_argument("--portal-url", default="", help="default: the stand-in's")

    def handle(self, *args: Any, **options: Any) -> None:
        resource_id = options["resource_id"]
        installation_id = options["installation"] or self._installation_of(resource_id)
        stand_in = options["fake_vercel_url"].rstrip("/")
        try:
            response = requests.post(
                stand_in + TRIGGER_PATH,
                json={
                    "installation": installation_id,
                    "resource": resource_id,
                    "reason": options["reason"],
                    "delay_hours": options["delay_hours"],
                    "role": options["role"],
                    "idempotency_key": options["idempotency_key"],
                    "portal_url": options["portal_url"],
                },
                timeout=(3.05, 60),
            )
            sent = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise CommandError(
                f"the stand-in at {stand_in} did not answer ({type(exc).__name__}); "
                "is `manage.py fake_vercel` running?"
            ) from None
        if not isinstance(sent, dict) or sent.get("error") or sent.get("status") is None:
            raise CommandError(f"not sent: {sent}")
        line = f"Portal answered {sent['status']}: {sent['answer']}"
        if not 200 <= int(sent["status"]) < 300:
            raise CommandError(line)
        self.stdout.write(f"{line} (Idempotency-Key {sent['idempotency_key']})")

    def _installation_of(self, resource_id: str) -> str:
        found = list(
            Resource.objects.filter(vercel_id=resource_id).values_list(
                "installation__vercel_id", flat=True
            )[:2]
        )
        if not found:
            raise CommandError(f"no resource {resource_id!r} in the database; pass --installation")
        if len(found) > 1:
            raise CommandError(
                f"resource id {resource_id!r} is in several installations; pass --installation"
            )
        return found[0]
