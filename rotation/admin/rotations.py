"""Rotation records: read-only, with the audit timeline and the retry and cancel buttons."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from rotation.admin.large_lists import CappedCountPaginator
from rotation.admin.list_filters import BatchFilter, InstallationFilter
from rotation.admin.read_only import ReadOnlyModelAdmin
from rotation.admin.staff_actions import ROTATION_CANCEL, ROTATION_RETRY, StaffAction
from rotation.models import AuditEvent, Rotation
from rotation.services import CANCELLABLE_STATES, rotation_cancel, rotation_retry


@admin.register(Rotation)
class RotationAdmin(ReadOnlyModelAdmin):
    list_display = [
        "__str__",
        "resource_id_display",
        "installation_display",
        "state",
        "emergency",
        "attempts",
        "short_error",
        "batch_link",
        "state_changed_at",
    ]
    list_filter = ["state", InstallationFilter, BatchFilter, "emergency"]
    list_select_related = ["resource__installation", "batch"]
    # Exact (not iexact) so the index on the resource id is used; installations have a filter.
    search_fields = ["resource__vercel_id__exact"]
    ordering = ["-id"]
    # Columns an index can sort a page of 100,000 rows by.
    sortable_by = ["resource_id_display", "batch_link", "state_changed_at"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 100
    fieldsets = [
        (None, {"fields": ["resource_link", "batch_link", "state", "emergency", "attempts"]}),
        (
            "Last error",
            {"fields": ["last_error_status", "last_error_code", "last_error", "next_attempt_at"]},
        ),
        (
            "Dates",
            {
                "fields": [
                    "created_at",
                    "state_changed_at",
                    "pushed_at",
                    "redeploy_deadline_at",
                    "redeployed_at",
                    "expire_old_after_push",
                    "keep_old_until",
                    "expired_at",
                    "completed_at",
                ]
            },
        ),
        (
            "Dashboard notification on Vercel",
            {
                "fields": [
                    "notification_state",
                    "notification_attempts",
                    "notification_error",
                    "notification_next_attempt_at",
                ]
            },
        ),
        ("Timeline (from the audit trail)", {"fields": ["timeline"]}),
    ]
    readonly_fields = ["resource_link", "batch_link", "timeline"]

    @admin.display(description="resource", ordering="resource__vercel_id")
    def resource_id_display(self, obj: Rotation) -> str:
        return obj.resource.vercel_id

    @admin.display(description="installation", ordering="resource__installation__vercel_id")
    def installation_display(self, obj: Rotation) -> str:
        return obj.resource.installation.vercel_id

    @admin.display(description="last error")
    def short_error(self, obj: Rotation) -> str:
        text = " ".join(filter(None, [str(obj.last_error_status or ""), obj.last_error_code]))
        return text or ""

    @admin.display(description="batch", ordering="batch_id")
    def batch_link(self, obj: Rotation) -> SafeString:
        url = reverse("admin:rotation_rotationbatch_change", args=[obj.batch_id])
        return format_html('<a href="{}">Batch #{}</a>', url, obj.batch_id)

    @admin.display(description="resource")
    def resource_link(self, obj: Rotation) -> SafeString:
        url = reverse("admin:rotation_resource_change", args=[obj.resource_id])
        return format_html('<a href="{}">{}</a>', url, obj.resource)

    @admin.display(description="events")
    def timeline(self, obj: Rotation) -> SafeString | str:
        # The rotation's own events and those of its batch as a whole (request, bulk retry).
        events = AuditEvent.objects.filter(
            Q(rotation_ref=obj.pk) | Q(batch_ref=obj.batch_id, rotation_ref__isnull=True)
        ).order_by("id")[:500]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    event.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                    event.actor_username or event.get_actor_type_display(),
                    event.action,
                    event.outcome,
                    event.reason or _event_summary(event.details),
                )
                for event in events
            ),
        )
        if not rows:
            return "No events yet."
        return format_html(
            "<table><thead><tr><th>when</th><th>who</th><th>what</th><th>outcome</th>"
            "<th>details</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<int:rotation_id>/retry/", wrap(self.retry_view), name="rotation_rotation_retry"),
            path(
                "<int:rotation_id>/cancel/", wrap(self.cancel_view), name="rotation_rotation_cancel"
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra = {
            "can_retry": ROTATION_RETRY.allowed(request),
            "can_cancel": ROTATION_CANCEL.allowed(request),
            "cancellable_states": [str(state) for state in CANCELLABLE_STATES],
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra)

    def _rotation(self, request: HttpRequest, rotation_id: int, *, action: StaffAction) -> Rotation:
        """The rotation a button is about; 403 (audited) without the view permission or the
        button's, checked before the lookup so a missing id answers 403 too."""
        if not (self.has_view_permission(request) and action.allowed(request)):
            action.deny(request, rotation=rotation_id)
        return get_object_or_404(Rotation.objects.select_related("resource"), pk=rotation_id)

    @staticmethod
    def _rotation_url(rotation: Rotation) -> str:
        return reverse("admin:rotation_rotation_change", args=[rotation.pk])

    @method_decorator(require_POST)
    def retry_view(self, request: HttpRequest, rotation_id: int) -> HttpResponse:
        rotation = self._rotation(request, rotation_id, action=ROTATION_RETRY)
        return ROTATION_RETRY.run(
            request,
            partial(rotation_retry, rotation=rotation),
            report=lambda _: (f"{rotation} queued again.", messages.SUCCESS),
            redirect_to=self._rotation_url(rotation),
            rotation=rotation,
        )

    @method_decorator(require_POST)
    def cancel_view(self, request: HttpRequest, rotation_id: int) -> HttpResponse:
        rotation = self._rotation(request, rotation_id, action=ROTATION_CANCEL)
        return ROTATION_CANCEL.run(
            request,
            partial(rotation_cancel, rotation=rotation),
            report=lambda _: (f"{rotation} cancelled.", messages.SUCCESS),
            redirect_to=self._rotation_url(rotation),
            rotation=rotation,
        )


def _event_summary(details: dict[str, Any]) -> str:
    """A short line from an event's details (they never hold secret values)."""
    keys = ("status", "code", "message", "error", "state", "attempt")
    parts = [f"{key}={details[key]}" for key in keys if key in details]
    return ", ".join(parts)[:300]
