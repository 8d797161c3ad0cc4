"""Read-only audit trail for Compliance: filters, a rotation's whole story, streaming exports.

Nobody, superusers included, can add, change or delete an event here; each refused attempt
and each export is itself audited. The changelist never counts the whole table.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import functools
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, NoReturn

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from rotation.admin.large_lists import CappedCountPaginator
from rotation.admin.read_only import ReadOnlyModelAdmin
from rotation.admin.refusals import deny
from rotation.audit import AuditAction, Origin, audit_record
from rotation.audit.chain import HASHED_FIELDS
from rotation.models import AuditEvent, Installation

EXPORT_FIELDS = ("id", *HASHED_FIELDS, "hash")
EXPORT_CHUNK_SIZE = 2000
# Where a spreadsheet may read a formula (OWASP "CSV injection"): `=`, `+`, `-`, `@`, tab or
# CR at the cell's start, or after any character it may split on (`,`, `;`, tab, a line
# break), spaces between allowed, e.g. `x;=1+1` opened with `;` as the delimiter.
FORMULA_START = re.compile(r"(?<![^,;\t\r\n])(?= *[=+\-@\t\r])")
ROTATION_PAGE_LIMIT = 5000


def csv_cell(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text, whatever delimiter it splits on: every part
    that would start with a formula trigger gets a leading quote."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    else:
        text = str(value)
    return FORMULA_START.sub("'", text)


@functools.cache
def action_labels() -> dict[str, str]:
    """Labels of AuditAction (members are only added in code, so one build per process)."""
    return dict(AuditAction.choices)


class _Echo:
    def write(self, value: str) -> str:
        return value


def export_csv_lines(rows: Iterable[Iterable], header: list[str] | None = None) -> Iterator[str]:
    """CSV text in chunks of rows; memory stays flat whatever the number of rows."""
    writer = csv.writer(_Echo(), quoting=csv.QUOTE_ALL)
    yield writer.writerow(header or EXPORT_FIELDS)
    batch: list[str] = []
    for row in rows:
        batch.append(writer.writerow([csv_cell(value) for value in row]))
        if len(batch) >= 500:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)


def export_jsonl_lines(rows: Iterable[tuple]) -> Iterator[str]:
    """One JSON object per line, in chunks of rows."""
    batch: list[str] = []
    for row in rows:
        record = dict(zip(EXPORT_FIELDS, row, strict=True))
        record["created_at"] = record["created_at"].isoformat()
        batch.append(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        if len(batch) >= 500:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)


def export_stream(queryset, lines) -> Iterator[str]:
    """Rows through a server-side cursor, `EXPORT_CHUNK_SIZE` at a time.

    On PostgreSQL inside a transaction: outside one Django declares the cursor WITH HOLD,
    which makes the server materialize the whole result before the first row. Not on
    SQLite, where our transactions take the write lock (BEGIN IMMEDIATE).
    """
    in_transaction = (
        transaction.atomic() if connection.vendor == "postgresql" else contextlib.nullcontext()
    )
    with in_transaction:
        rows = queryset.values_list(*EXPORT_FIELDS).iterator(chunk_size=EXPORT_CHUNK_SIZE)
        yield from lines(rows)


class ActorFilter(admin.SimpleListFilter):
    title = "actor"
    parameter_name = "actor"

    def lookups(self, request, model_admin):
        usernames = (
            get_user_model()
            .objects.filter(is_staff=True)
            .order_by("username")
            .values_list("username", flat=True)[:200]
        )
        return [(name, name) for name in usernames]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(actor_username=self.value())
        return queryset


class InstallationFilter(admin.SimpleListFilter):
    title = "installation"
    parameter_name = "installation"

    def lookups(self, request, model_admin):
        installations = Installation.objects.order_by("vercel_id").values_list("vercel_id", "name")[
            :500
        ]
        return [(ref, f"{name} ({ref})" if name else ref) for ref, name in installations]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(installation_ref=self.value())
        return queryset


# The event page shows every field, read-only: the chained ones, with a link and a
# readable form where the raw value would be bare.
EVENT_FIELD_DISPLAY = {"rotation_ref": "rotation_link", "details": "details_pretty"}
EVENT_FIELDS = ("id", *(EVENT_FIELD_DISPLAY.get(name, name) for name in HASHED_FIELDS), "hash")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyModelAdmin):
    list_display = [
        "id",
        "created_at",
        "actor",
        "action_label",
        "outcome",
        "installation_ref",
        "resource_ref",
        "rotation_link",
        "ticket",
        "source_ip",
    ]
    list_display_links = ["id", "created_at"]
    list_filter = ["action", "outcome", "actor_type", ActorFilter, InstallationFilter]
    date_hierarchy = "created_at"
    search_fields = [
        "resource_ref__exact",
        "rotation_ref__exact",
        "ticket__exact",
        "installation_ref__exact",
    ]
    search_help_text = "Exact resource id, rotation id, ticket or installation id."
    # Newest first by time: the created_at index serves date ranges and filters alike
    # (ordering by id alone makes PostgreSQL walk the whole pk index for a past month).
    ordering = ["-created_at", "-id"]
    sortable_by = ["id", "created_at"]
    list_per_page = 100
    list_max_show_all = 100
    show_full_result_count = False
    paginator = CappedCountPaginator
    actions = None
    fields = readonly_fields = EVENT_FIELDS

    def has_export_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request) and request.user.has_perm(
            "rotation.export_auditevent"
        )

    @admin.display(description="actor", ordering="actor_username")
    def actor(self, obj: AuditEvent) -> str:
        return obj.actor_username or obj.get_actor_type_display()

    @admin.display(description="action")
    def action_label(self, obj: AuditEvent) -> str:
        # The field's callable choices would be rebuilt for every row.
        return action_labels().get(obj.action, obj.action)

    @admin.display(description="rotation")
    def rotation_link(self, obj: AuditEvent) -> str:
        if obj.rotation_ref is None:
            return "-"
        url = reverse("admin:rotation_auditevent_rotation", args=[obj.rotation_ref])
        return format_html('<a href="{}">#{} (all events)</a>', url, obj.rotation_ref)

    @admin.display(description="details")
    def details_pretty(self, obj: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.details, indent=2, sort_keys=True))

    def get_search_results(self, request, queryset, search_term):
        """Exact matches on indexed columns only (Django would CAST the integer column)."""
        if not search_term.strip():
            return queryset, False
        for term in search_term.split():
            match = Q(resource_ref=term) | Q(ticket=term) | Q(installation_ref=term)
            number = term.lstrip("#")
            if number.isdigit() and len(number) < 19:
                match |= Q(rotation_ref=int(number))
            queryset = queryset.filter(match)
        return queryset, False

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "export/csv/",
                wrap(self.export_view),
                {"export_format": "csv"},
                name="rotation_auditevent_export_csv",
            ),
            path(
                "export/jsonl/",
                wrap(self.export_view),
                {"export_format": "jsonl"},
                name="rotation_auditevent_export_jsonl",
            ),
            path(
                "rotation/<int:rotation_id>/",
                wrap(self.rotation_view),
                name="rotation_auditevent_rotation",
            ),
            *super().get_urls(),
        ]

    def _require_view(self, request: HttpRequest, where: str) -> None:
        if not self.has_view_permission(request):
            deny(
                request,
                action=AuditAction.AUDIT_VIEWED,
                message="no permission to view",
                details={"view": where},
            )

    def _refuse_change(self, request: HttpRequest, **details: Any) -> NoReturn:
        deny(
            request,
            action=AuditAction.AUDIT_CHANGE_REFUSED,
            message="audit events are read-only",
            details=details,
        )

    def changelist_view(self, request, extra_context=None):
        self._require_view(request, "changelist")
        query = request.GET.urlencode()
        extra_context = {
            **(extra_context or {}),
            "can_export": self.has_export_permission(request),
            "export_query": f"?{query}" if query else "",
        }
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "POST":
            self._refuse_change(request, event=object_id, view="change")
        self._require_view(request, "event")
        return super().change_view(request, object_id, form_url, extra_context)

    def add_view(
        self,
        request: HttpRequest,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> NoReturn:
        self._refuse_change(request, view="add")

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> NoReturn:
        self._refuse_change(request, event=object_id, view="delete")

    def history_view(self, request, object_id, extra_context=None):
        self._require_view(request, "history")
        return super().history_view(request, object_id, extra_context)

    def rotation_view(self, request: HttpRequest, rotation_id: int) -> HttpResponse:
        """Every event of one rotation, oldest first, on one page."""
        self._require_view(request, "rotation")
        events = list(
            AuditEvent.objects.filter(rotation_ref=rotation_id).order_by("id")[
                : ROTATION_PAGE_LIMIT + 1
            ]
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Audit events of rotation #{rotation_id}",
            "rotation_id": rotation_id,
            "events": events[:ROTATION_PAGE_LIMIT],
            "truncated": len(events) > ROTATION_PAGE_LIMIT,
            "changelist_url": reverse("admin:rotation_auditevent_changelist")
            + f"?rotation_ref={rotation_id}",
        }
        return TemplateResponse(request, "admin/rotation/auditevent/rotation.html", context)

    def export_view(self, request: HttpRequest, export_format: str) -> HttpResponseBase:
        """The current filtered changelist as CSV or JSON lines, streamed."""
        if not self.has_export_permission(request):
            deny(
                request,
                action=AuditAction.AUDIT_EXPORTED,
                message="no permission to export",
                details={"format": export_format},
            )
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("invalid filter")
        queryset = changelist.queryset
        with transaction.atomic():
            audit_record(
                action=AuditAction.AUDIT_EXPORTED,
                actor=request.user,
                origin=Origin.of(request),
                details={"format": export_format, "filters": request.GET.urlencode()[:2000]},
            )
        lines = export_csv_lines if export_format == "csv" else export_jsonl_lines
        content_type = (
            "text/csv; charset=utf-8"
            if export_format == "csv"
            else "application/x-ndjson; charset=utf-8"
        )
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response = StreamingHttpResponse(export_stream(queryset, lines), content_type=content_type)
        response["Content-Disposition"] = (
            f'attachment; filename="audit-events-{stamp}.{export_format}"'
        )
        response["Cache-Control"] = "no-store"
        return response
