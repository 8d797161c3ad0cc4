"""`manage.py fake_vercel`: running the stand-in, and refusing a bad config."""

import json
import select
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from rotation import vercel
from tests.devtools.fake_vercel.api_calls import VALUE


def start_command(tmp_path: Path, installation: str, token: str, *options: str):
    """`manage.py fake_vercel` in a process, knowing one installation with one resource
    (`res_cmd`, product `pg`); returns the process once it printed its first line, and that line."""
    config = tmp_path / "installations.json"
    config.write_text(
        json.dumps(
            {
                "installations": [
                    {
                        "id": installation,
                        "access_token": token,
                        "resources": [{"id": "res_cmd", "product": "pg", "name": "db"}],
                    }
                ]
            }
        )
    )
    manage = Path(django_settings.BASE_DIR) / "manage.py"
    process = subprocess.Popen(
        [
            sys.executable,
            str(manage),
            "fake_vercel",
            "--port",
            "0",
            "--config",
            str(config),
            *options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Bounded: a command that never prints must fail the test, not hang it.
    ready, _, _ = select.select([process.stdout], [], [], 30)
    if not ready:
        process.kill()
        pytest.fail("the command printed nothing within 30 s")
    return process, process.stdout.readline()


def test_it_runs_as_a_management_command_for_both_endpoints(tmp_path, settings):
    process, line = start_command(tmp_path, "icfg_cmd", "vci_cmd_token_1")
    try:
        assert line.startswith("Fake Vercel at http://127.0.0.1:"), line
        settings.VERCEL_API_URL = line.split()[3].rstrip(",")
        secrets = [{"name": "DATABASE_URL", "value": VALUE}]
        for endpoint in ("current", "deprecated"):
            vercel.update_resource_secrets(
                installation_id="icfg_cmd",
                resource_id="res_cmd",
                token="vci_cmd_token_1",
                secrets=secrets,
                endpoint=endpoint,
                product="pg",
            )
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert stderr.count("-> 201") == 2
    assert VALUE not in stderr
    assert "vci_cmd_token_1" not in stderr


@pytest.mark.parametrize(
    ("content", "complaint"),
    [(None, "no such file"), ("{oops", "not valid JSON"), ('{"installations": [{}]}', "needs id")],
)
def test_its_command_refuses_a_bad_config(tmp_path, content, complaint):
    config = tmp_path / "installations.json"
    if content is not None:
        config.write_text(content)

    with pytest.raises(CommandError, match=complaint):
        call_command("fake_vercel", "--port", "0", "--config", str(config))


def test_its_command_plays_the_removed_deprecated_endpoint(tmp_path, settings):
    process, line = start_command(tmp_path, "icfg_gone", "vci_gone_token_1", "--gone-deprecated")
    try:
        settings.VERCEL_API_URL = line.split()[3].rstrip(",")
        assert process.stdout.readline() == (
            "The deprecated secrets endpoint answers 410 (removed).\n"
        )
        secrets = [{"name": "DATABASE_URL", "value": VALUE}]
        common = {"installation_id": "icfg_gone", "resource_id": "res_cmd", "product": "pg"}
        with pytest.raises(vercel.VercelError) as gone:
            vercel.update_resource_secrets(
                **common, token="vci_gone_token_1", secrets=secrets, endpoint="deprecated"
            )
        assert (gone.value.status, gone.value.code) == (410, "gone")
        vercel.update_resource_secrets(
            **common, token="vci_gone_token_1", secrets=secrets, endpoint="current"
        )
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert stderr.count("-> 410") == 1
    assert stderr.count("-> 201") == 1
