"""Figures for the staff dashboard, counted from our own rows."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import Count, Min
from django.db.models.functions import TruncDate
from django.utils import timezone

from rotation.models import AuditAction, AuditEvent, Installation, Resource, Rotation
from rotation.vercel import endpoints

State = Rotation.State
RECENT_SWITCHES = 10


def dashboard_figures(*, now: datetime | None = None, days: int = 30) -> dict[str, Any]:
    """Rotations waiting for redeploys (count, oldest), overdue, failures, rotations per day."""
    now = now or timezone.now()
    waiting = Rotation.objects.filter(state__in=Rotation.WAITING_STATES)
    summary = waiting.aggregate(count=Count("id"), oldest=Min("pushed_at"))
    oldest = (
        waiting.filter(pushed_at=summary["oldest"]).order_by("pk").first()
        if summary["oldest"]
        else None
    )
    since = now - timedelta(hours=24)
    first_day = (now - timedelta(days=days - 1)).date()
    counted = dict(
        Rotation.objects.filter(created_at__date__gte=first_day)
        .annotate(day=TruncDate("created_at"))
        .values_list("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
    )
    per_day: list[tuple[date, int]] = [
        (first_day + timedelta(days=i), counted.get(first_day + timedelta(days=i), 0))
        for i in range(days)
    ]
    return {
        "now": now,
        "awaiting_count": summary["count"],
        "awaiting_oldest": oldest,
        "overdue_count": waiting.filter(redeploy_deadline_at__lt=now).count(),
        "escalated_count": waiting.filter(state=State.ESCALATED).count(),
        "failed_24h_count": Rotation.objects.filter(
            state=State.FAILED, state_changed_at__gte=since
        ).count(),
        "expiry_failing_count": Rotation.objects.filter(state=State.EXPIRING)
        .exclude(last_error="")
        .count(),
        "per_day": per_day,
        "deprecated": deprecated_endpoint_figures(now=now),
    }


def deprecated_endpoint_figures(*, now: datetime) -> dict[str, Any]:
    """Active installations still on the deprecated endpoint (with their resources and open
    rotations), the sunset date and the days left, and the latest automatic switches."""
    still = Installation.objects.filter(
        endpoint=Installation.Endpoint.DEPRECATED, status=Installation.Status.ACTIVE
    )
    sunset = endpoints.deprecated_sunset()
    return {
        "installations": still.count(),
        "resources": Resource.objects.filter(installation__in=still).count(),
        "open_rotations": Rotation.objects.filter(
            resource__installation__in=still, state__in=Rotation.OPEN_STATES
        ).count(),
        "sunset": sunset,
        "days_left": (sunset - now.date()).days if sunset else None,
        "recent_switches": list(
            AuditEvent.objects.filter(action=AuditAction.INSTALLATION_ENDPOINT_FELL_BACK)
            .order_by("-id")
            .values("created_at", "installation_ref", "resource_ref", "details")[:RECENT_SWITCHES]
        ),
    }
