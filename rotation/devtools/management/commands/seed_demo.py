"""`manage.py seed_demo`: demo users, installations and resources for the local stand-in."""

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from rotation.devtools.demo_data import demo_seed


class Command(BaseCommand):
    help = "Create demo users, installations and resources (idempotent; development only)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--force", action="store_true", help="run even though real keys are configured"
        )

    def handle(self, *args: Any, force: bool, **options: Any) -> None:
        # Real keys mean a real deployment: never plant known passwords there by accident.
        if settings.SECRET_KEY != settings.DEV_SECRET_KEY and not force:
            raise CommandError(
                "seed_demo creates users with known passwords; this looks like a real "
                "deployment (SECRET_KEY is set). Use --force on a throw-away instance."
            )
        result = demo_seed()
        self.stdout.write(
            f"Demo data: {result.installations} installations, {result.resources} resources."
        )
        if result.users_created:
            self.stdout.write("Demo users created (demo-only passwords, shown once):")
            for username, password in result.users_created:
                self.stdout.write(f"  {username:<11} {password}")
        else:
            self.stdout.write("Demo users already exist; passwords unchanged (see README).")
