"""The inventory check's reports: what differed between our resources and Vercel's list,
what was applied, and which installations could not be checked. Read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from rotation.admin.read_only import ReadOnlyModelAdmin
from rotation.models import InventoryFinding, InventoryReport

FINDING_FIELDS = (
    "installation_ref",
    "resource_ref",
    "kind",
    "ours",
    "theirs",
    "applied",
    "message",
)
REPORT_FIELDS = (
    "source",
    "requested_by",
    "installations",
    "started_at",
    "finished_at",
    "installations_checked",
    "installations_failed",
    "differences",
    "changes_applied",
)


class InventoryFindingInline(admin.TabularInline):
    model = InventoryFinding
    fields = readonly_fields = FINDING_FIELDS
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(InventoryReport)
class InventoryReportAdmin(ReadOnlyModelAdmin):
    list_display = [
        "__str__",
        "source",
        "requested_by",
        "started_at",
        "finished_at",
        "installations_checked",
        "installations_failed",
        "differences",
        "changes_applied",
    ]
    list_filter = ["source"]
    fields = readonly_fields = REPORT_FIELDS
    inlines = [InventoryFindingInline]


@admin.register(InventoryFinding)
class InventoryFindingAdmin(ReadOnlyModelAdmin):
    """Every difference ever found, searchable by installation or resource."""

    list_display = ("report", *FINDING_FIELDS)
    list_filter = ["kind", "applied"]
    search_fields = ["installation_ref__exact", "resource_ref__exact"]
    list_select_related = ["report"]
