"""Admin pages for redeploy tracking: the dashboard, confirm a redeploy, roll back, webhooks.

Thin: check the permission, call one service, report. The pages hang off the admin site
through `urlpatterns` (included before `admin/` in partnerportal/urls.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from functools import partial
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from rotation.admin.read_only import ReadOnlyModelAdmin
from rotation.admin.staff_actions import REDEPLOY_CONFIRM, ROTATION_ROLLBACK, StaffAction
from rotation.models import Rotation, WebhookEvent
from rotation.redeploy import rotation_confirm_redeploy
from rotation.redeploy.dashboard import dashboard_figures
from rotation.services import rotation_rollback
from rotation.services.policy import credential_ages_overdue_count

VIEW_PERMISSION = "rotation.view_rotation"
CHART_WIDTH, CHART_HEIGHT, CHART_LEFT, CHART_BOTTOM, CHART_TOP = 640, 180, 28, 22, 12
CHART_RIGHT = 18  # room for the last date label


class AuditTextForm(forms.Form):
    """The one text a staff action asks for (a note, a reason); kept in the audit trail."""

    text = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 4, "cols": 60}))

    def __init__(self, *args: Any, label: str, help_text: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["text"].label = label
        self.fields["text"].help_text = help_text


def rotations_per_day_svg(per_day: list[tuple[date, int]]) -> SafeString:
    """A bar chart drawn on the server as inline SVG (no scripts, no CDN)."""
    peak = max((count for _, count in per_day), default=0) or 1
    plot_height = CHART_HEIGHT - CHART_BOTTOM - CHART_TOP
    step = (CHART_WIDTH - CHART_LEFT - CHART_RIGHT) / max(len(per_day), 1)
    bars = []
    for index, (day, count) in enumerate(per_day):
        bar_height = plot_height * count / peak
        x = CHART_LEFT + index * step
        bars.append(
            (
                f"{x + 1:.1f}",
                f"{CHART_HEIGHT - CHART_BOTTOM - bar_height:.1f}",
                f"{max(step - 2, 1):.1f}",
                f"{bar_height:.1f}",
                day.isoformat(),
                count,
            )
        )
    labels = [
        (f"{CHART_LEFT + index * step + step / 2:.1f}", day.strftime("%m-%d"))
        for index, (day, _) in enumerate(per_day)
        if index % 5 == 0 or index == len(per_day) - 1
    ]
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" id="rotations-per-day" width="{w}" '
        'height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="Rotations per day">'
        '<line x1="{left}" y1="{base}" x2="{w}" y2="{base}" stroke="currentColor"/>'
        '<text x="{left_text}" y="{top}" font-size="10" text-anchor="end">{peak}</text>'
        '<text x="{left_text}" y="{base}" font-size="10" text-anchor="end">0</text>'
        "{bars}{labels}</svg>",
        w=CHART_WIDTH,
        h=CHART_HEIGHT,
        left=CHART_LEFT,
        left_text=CHART_LEFT - 4,
        base=CHART_HEIGHT - CHART_BOTTOM,
        top=CHART_TOP + 4,
        peak=peak,
        bars=format_html_join(
            "",
            '<rect class="bar" x="{}" y="{}" width="{}" height="{}" fill="#417690">'
            "<title>{}: {}</title></rect>",
            bars,
        ),
        labels=format_html_join(
            "",
            '<text x="{}" y="' + str(CHART_HEIGHT - 6) + '" font-size="10" '
            'text-anchor="middle">{}</text>',
            labels,
        ),
    )


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """Rotations waiting for redeploys, overdue, failed, and rotations per day."""
    if not request.user.has_perm(VIEW_PERMISSION):
        raise PermissionDenied  # audited by the 403 handler
    figures = dashboard_figures()
    context = {
        "policy_overdue_count": credential_ages_overdue_count(),
        "credential_ages_url": reverse("admin:rotation_credentialage_changelist"),
        **admin.site.each_context(request),
        "title": "Rotation dashboard",
        "chart": rotations_per_day_svg(figures["per_day"]),
        "rotation_list_url": reverse("admin:rotation_rotation_changelist"),
        "installation_list_url": reverse("admin:rotation_installation_changelist"),
        **figures,
    }
    return TemplateResponse(request, "admin/rotation/redeploy/dashboard.html", context)


def _rotation_form_view(
    request: HttpRequest,
    rotation_id: int,
    *,
    action: StaffAction,
    service: Callable[..., Any],
    text_argument: str,
    label: str,
    help_text: str,
    title: str,
    button: str,
    done: str,
) -> HttpResponse:
    """A staff action on one rotation that asks for a text first: the page on GET, the
    service call (`text_argument` = the text) on a valid POST."""
    # Permission before the lookup: a missing id and a forbidden one both answer 403.
    action.guard(request, rotation=rotation_id)
    rotation = get_object_or_404(
        Rotation.objects.select_related("resource__installation"), pk=rotation_id
    )
    refs: dict[str, Any] = {"rotation": rotation, "resource": rotation.resource}
    rotation_url = reverse("admin:rotation_rotation_change", args=[rotation.pk])
    form = AuditTextForm(request.POST or None, label=label, help_text=help_text)
    if request.method == "POST" and form.is_valid():
        return action.run(
            request,
            partial(service, rotation=rotation, **{text_argument: form.cleaned_data["text"]}),
            report=lambda _: (f"{rotation}: {done}", messages.SUCCESS),
            redirect_to=rotation_url,
            **refs,
        )
    context = {
        **admin.site.each_context(request),
        "title": f"{title}: {rotation}",
        "rotation": rotation,
        "rotation_url": rotation_url,
        "opts": Rotation._meta,
        "form": form,
        "button": button,
        "waiting": rotation.state in Rotation.WAITING_STATES,
        "checks": rotation.redeploy_checks.all(),
    }
    return TemplateResponse(request, "admin/rotation/redeploy/rotation_form.html", context)


def confirm_redeploy_view(request: HttpRequest, rotation_id: int) -> HttpResponse:
    """Record that the customer confirmed redeploying (with a note)."""
    return _rotation_form_view(
        request,
        rotation_id,
        action=REDEPLOY_CONFIRM,
        service=rotation_confirm_redeploy,
        text_argument="note",
        label="Note",
        help_text="How the customer confirmed (ticket, call, email); kept in the audit trail.",
        title="Record customer-confirmed redeploy",
        button="Record confirmed redeploy",
        done="redeploy confirmation recorded; the old credentials will be expired.",
    )


def rollback_view(request: HttpRequest, rotation_id: int) -> HttpResponse:
    """Re-push the previous credentials (with a reason)."""
    return _rotation_form_view(
        request,
        rotation_id,
        action=ROTATION_ROLLBACK,
        service=rotation_rollback,
        text_argument="reason",
        label="Reason",
        help_text="Why roll back? Recorded in the audit trail.",
        title="Roll back",
        button="Roll back to the previous credentials",
        done="rollback requested; the previous credentials will be put back on Vercel shortly.",
    )


def _wrap(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    return admin.site.admin_view(view)


urlpatterns = [
    path("dashboard/", _wrap(dashboard_view), name="redeploy_dashboard"),
    path(
        "rotation/<int:rotation_id>/confirm-redeploy/",
        _wrap(confirm_redeploy_view),
        name="redeploy_confirm",
    ),
    path("rotation/<int:rotation_id>/rollback/", _wrap(rollback_view), name="redeploy_rollback"),
]


# The delivery page shows every field, read-only.
WEBHOOK_FIELDS = (
    "event_id",
    "type",
    "occurred_at",
    "received_at",
    "deployment_id",
    "status",
    "result",
    "payload_json",
)


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyModelAdmin):
    """Deliveries from Vercel as received (they carry no secret values)."""

    list_display = ["event_id", "type", "occurred_at", "received_at", "status", "short_result"]
    list_filter = ["type", "status"]
    search_fields = ["=event_id", "=deployment_id"]
    ordering = ["-id"]
    show_full_result_count = False
    list_per_page = 100
    fields = readonly_fields = WEBHOOK_FIELDS

    @admin.display(description="result")
    def short_result(self, obj: WebhookEvent) -> str:
        return obj.result[:120]

    @admin.display(description="payload")
    def payload_json(self, obj: WebhookEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, sort_keys=True))
