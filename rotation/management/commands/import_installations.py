"""`manage.py import_installations FILE.json`: upsert installations and resources."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from rotation.importer import ImportRefused, installations_import


class Command(BaseCommand):
    help = "Create or update installations and resources from a JSON file (all or nothing)."

    def add_arguments(self, parser):
        parser.add_argument("file", help="JSON file in the import format (see README)")

    def handle(self, *args, file: str, **options):
        path = Path(file)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CommandError(f"{path}: no such file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            # The message names the position only; it never echoes the file's content.
            position = (
                f" at line {exc.lineno} column {exc.colno}"
                if isinstance(exc, json.JSONDecodeError)
                else ""
            )
            raise CommandError(f"{path}: not valid JSON{position}; nothing imported") from None
        except RecursionError:
            raise CommandError(
                f"{path}: JSON nested too deeply to read; nothing imported"
            ) from None
        try:
            result = installations_import(data=data, source=f"import_installations {path.name}")
        except ImportRefused as refused:
            for problem in refused.problems:
                self.stderr.write(f"  {problem}")
            raise CommandError(
                f"{path}: refused, nothing imported ({len(refused.problems)} problems above)"
            ) from None
        for warning in result.warnings:
            self.stderr.write(f"warning: {warning}")
        self.stdout.write(
            f"Imported {path.name}: installations {result.installations_created} created, "
            f"{result.installations_updated} updated; resources {result.resources_created} "
            f"created, {result.resources_updated} updated."
        )
