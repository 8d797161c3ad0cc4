"""`manage.py rotate_resources`: the admin action's twin (same service, same permission check)."""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from rotation.models import Resource, Rotation, RotationBatch
from rotation.selectors import batch_progress
from rotation.services import RotationRefused, rotation_request


class Command(BaseCommand):
    help = (
        "Rotate the credentials of resources (Vercel resource ids) and push them to Vercel. "
        "Prints the batch id."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("resource_ids", nargs="+", metavar="RESOURCE_ID")
        parser.add_argument("--actor", required=True, help="username the request is made as")
        parser.add_argument("--reason", required=True)
        parser.add_argument("--ticket", default="")
        parser.add_argument("--installation", help="only resources of this installation (icfg_...)")
        parser.add_argument(
            "--emergency", action="store_true", help="expire the old credentials once pushed"
        )
        parser.add_argument("--wait", action="store_true", help="show progress until done")
        parser.add_argument(
            "--poll", type=float, default=1.0, help="seconds between progress lines with --wait"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        actor = self._actor(options["actor"])
        ids = self._resource_pks(options["resource_ids"], options["installation"])
        try:
            batch = rotation_request(
                resource_ids=ids,
                actor=actor,
                reason=options["reason"],
                ticket=options["ticket"],
                emergency=options["emergency"],
                source=RotationBatch.Source.CLI,
            )
        except RotationRefused as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(str(batch.pk))
        rotations = batch.rotations.count()
        self.stderr.write(f"batch {batch.pk}: {rotations} rotation(s) requested")
        for entry in batch.refused:
            name = entry.get("vercel_id") or entry["resource"]
            self.stderr.write(f"refused {name}: {entry['reason']}")
        if not rotations:
            raise CommandError("every resource was refused; nothing to rotate")
        if options["wait"]:
            self._wait(batch, options["poll"])

    def _actor(self, username: str) -> Any:
        try:
            return get_user_model().objects.get_by_natural_key(username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user {username!r}") from None

    def _resource_pks(self, vercel_ids: list[str], installation: str | None) -> list[int]:
        """Vercel resource ids -> our ids; an id found in two installations needs --installation."""
        rows = Resource.objects.filter(vercel_id__in=vercel_ids)
        if installation:
            rows = rows.filter(installation__vercel_id=installation)
        found: dict[str, list[tuple[int, str]]] = {}
        for pk, vercel_id, icfg in rows.values_list("pk", "vercel_id", "installation__vercel_id"):
            found.setdefault(vercel_id, []).append((pk, icfg))
        problems = []
        for vercel_id in vercel_ids:
            matches = found.get(vercel_id, [])
            if not matches:
                where = f" in installation {installation}" if installation else ""
                problems.append(f"{vercel_id}: no such resource{where}")
            elif len(matches) > 1:
                icfgs = ", ".join(sorted(icfg for _, icfg in matches))
                problems.append(f"{vercel_id}: ambiguous ({icfgs}); use --installation")
        if problems:
            raise CommandError("; ".join(problems))
        return [found[vercel_id][0][0] for vercel_id in dict.fromkeys(vercel_ids)]

    def _wait(self, batch: RotationBatch, poll: float) -> None:
        last = None
        while True:
            progress = batch_progress(batch=batch)
            counts = " ".join(f"{state}={n}" for state, n in progress.counts.items() if n)
            line = f"{progress.percent:3d}% {counts}"
            if line != last:
                self.stderr.write(line)
                last = line
            if progress.finished:
                break
            time.sleep(poll)
        failed = batch.rotations.filter(state=Rotation.State.FAILED).select_related("resource")
        for rotation in failed:
            self.stderr.write(
                f"failed {rotation.resource.vercel_id}: {rotation.last_error_code} "
                f"{rotation.last_error}"
            )
        if progress.failed:
            raise CommandError(f"{progress.failed} rotation(s) failed")
