"""`manage.py fake_vercel`: run the local Vercel stand-in until Ctrl-C."""

import json
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from rotation.devtools.fake_vercel import FakeVercel


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(text)
    return value


class Command(BaseCommand):
    help = "Serve a local stand-in for Vercel's resource secrets API, with fault injection."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument(
            "--rate", type=float, default=None, help="requests per second, per token and method"
        )
        parser.add_argument("--fail-rate", type=probability, default=0.0, help="share of 5xx")
        parser.add_argument("--latency-ms", type=float, default=0.0)
        parser.add_argument("--hang-rate", type=probability, default=0.0)
        parser.add_argument("--hang-seconds", type=float, default=30.0)
        parser.add_argument("--drop-rate", type=probability, default=0.0)
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument(
            "--config", default=None, help="import_installations JSON (default: the database)"
        )
        parser.add_argument(
            "--gone-deprecated",
            type=int,
            nargs="?",
            const=410,
            default=None,
            choices=[410, 404],
            help="play Vercel after it removed the deprecated secrets endpoint: answer it "
            "with 410 (or the status given: 404)",
        )
        parser.add_argument(
            "--portal-url",
            default="http://127.0.0.1:8000",
            help="where it sends Request Secrets Rotation, playing Vercel",
        )
        parser.add_argument("--client-id", default="demo-client", help="aud of its tokens")
        parser.add_argument("--issuer", default=None, help="iss of its tokens (default: its URL)")

    def handle(self, *args: Any, **options: Any) -> None:
        fake = FakeVercel(
            host=options["host"],
            port=options["port"],
            rate=options["rate"],
            fail_rate=options["fail_rate"],
            latency_ms=options["latency_ms"],
            hang_rate=options["hang_rate"],
            hang_seconds=options["hang_seconds"],
            drop_rate=options["drop_rate"],
            seed=options["seed"],
            reload_from_database=options["config"] is None,
            gone_deprecated=options["gone_deprecated"],
            portal_url=options["portal_url"],
            client_id=options["client_id"],
            issuer=options["issuer"],
        )
        if options["config"]:
            path = Path(options["config"])
            try:
                fake.load_config(json.loads(path.read_text(encoding="utf-8")))
            except FileNotFoundError:
                raise CommandError(f"{path}: no such file") from None
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise CommandError(f"{path}: not valid JSON") from None
            except ValueError as exc:
                raise CommandError(f"{path}: {exc}") from None
            source = path.name
        else:
            try:
                count = fake.load_from_database()
            except DatabaseError as exc:
                raise CommandError(
                    f"cannot read installations from the database ({type(exc).__name__}); "
                    "run `manage.py migrate` or pass --config FILE"
                ) from None
            source = f"the database ({count} installations; reloads on unknown ones)"
        try:
            fake.start()
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {options['host']}:{options['port']}: {exc}"
            ) from None
        self.stdout.write(f"Fake Vercel at {fake.url}, installations from {source}. Ctrl-C stops.")
        if fake.gone_deprecated:
            self.stdout.write(
                f"The deprecated secrets endpoint answers {fake.gone_deprecated} (removed)."
            )
        self.stdout.flush()
        try:
            fake.serve_until_interrupted()
        finally:
            fake.stop()
