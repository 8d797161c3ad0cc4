"""`manage.py seed_demo`: demo users, installations and resources for the local stand-in."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from rotation.demo import demo_seed


class Command(BaseCommand):
    help = "Create demo users, installations and resources (idempotent; development only)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--allow-production", action="store_true", help="run even with DEBUG=False"
        )

    def handle(self, *args, allow_production: bool, **options):
        if not settings.DEBUG and not allow_production:
            raise CommandError("seed_demo creates users with known passwords; DEBUG is off")
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
