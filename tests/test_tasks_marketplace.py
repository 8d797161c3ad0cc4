"""The Marketplace tasks and schedules: the daily inventory check, and the sweeper resuming
token rotations and notifications."""

from __future__ import annotations

from datetime import timedelta

import time_machine
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import OrmQ, Schedule

from rotation import tasks
from rotation.models import Installation, InventoryReport
from rotation.services.installation_tokens import installation_tokens_rotate_request
from rotation.tasks_marketplace import INVENTORY_SCHEDULE_NAME


def test_the_daily_schedule_runs_the_inventory_check(market, installation):
    schedule = Schedule.objects.get(name=INVENTORY_SCHEDULE_NAME)
    assert schedule.schedule_type == Schedule.DAILY
    report_id = import_string(schedule.func)()
    report = InventoryReport.objects.get(pk=report_id)
    assert report.source == "schedule"
    assert report.installations_checked == 1


def test_the_sweeper_task_resumes_a_token_rotation_whose_task_was_lost(
    market, lead, installation, django_capture_on_commit_callbacks
):
    installation_tokens_rotate_request(installation_ids=[installation.pk], actor=lead, origin=None)
    # Its task never ran (lost with a Redis broker, say).
    later = time_machine.travel(timezone.now() + timedelta(hours=1), tick=False)
    with later, django_capture_on_commit_callbacks(execute=True):
        assert tasks.rotations_sweep() == 1
    queued = [entry.task for entry in OrmQ.objects.all()]
    assert [(task["func"], task["args"]) for task in queued] == [
        ("rotation.tasks_marketplace.installation_token_rotate", (installation.pk,))
    ]
    assert import_string(queued[0]["func"])(*queued[0]["args"]) == ""
    assert Installation.objects.get(pk=installation.pk).token_rotation_step == ""
