"""Filters of the rotation list that stay cheap with many rows: they list a few choices but
accept any value in the URL."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from rotation.models import Installation, RotationBatch


class InstallationFilter(admin.SimpleListFilter):
    """Lists a few installations but accepts any `?installation=icfg_…`."""

    title = "installation"
    parameter_name = "installation"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        values = Installation.objects.order_by("vercel_id").values_list("vercel_id", flat=True)
        return [(value, value) for value in values[:50]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(resource__installation__vercel_id=self.value())
        return queryset


class BatchFilter(admin.SimpleListFilter):
    """Lists recent batches but accepts any `?batch=<id>` (the batch page links here)."""

    title = "batch"
    parameter_name = "batch"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        ids = RotationBatch.objects.order_by("-id").values_list("id", flat=True)[:20]
        return [(str(pk), f"Batch #{pk}") for pk in ids]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(batch_id=int(value))
        return queryset
