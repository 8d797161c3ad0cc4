"""`manage.py rotate_overdue`: the daily policy run, by hand."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rotation.models import Resource
from rotation.services import RotationRefused
from rotation.services.policy import rotations_request_overdue


class Command(BaseCommand):
    help = (
        "Request rotations for resources whose credentials are older than their product's "
        "rotation policy allows (at most ROTATION_POLICY_MAX_PER_RUN). Prints the batch ids."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be requested, request nothing"
        )
        parser.add_argument("--product", default="", help="only resources of this product")

    def handle(self, *args: Any, **options: Any) -> None:
        product = options["product"]
        if product and not Resource.objects.filter(product=product).exists():
            raise CommandError(f"no resource has product {product!r}")
        try:
            run = rotations_request_overdue(product=product, dry_run=options["dry_run"])
        except RotationRefused as exc:
            raise CommandError(exc.message) from None
        names = dict(Resource.objects.filter(pk__in=run.requested).values_list("pk", "vercel_id"))
        verb = "would request" if run.dry_run else "requested"
        for pk in run.requested:
            self.stderr.write(f"{verb} {names.get(pk, pk)}")
        for batch in run.batches:
            self.stdout.write(str(batch))
        self.stderr.write(
            f"{run.overdue} overdue; {verb} {len(run.requested)} rotation(s)"
            + (f" in {len(run.batches)} batch(es)" if run.batches else "")
        )
