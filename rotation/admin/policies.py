"""Rotation policies (editable, audited) and the compliance view of credential ages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import URLPattern, path
from django.utils import timezone

from rotation.admin.audit import export_csv_lines
from rotation.admin.read_only import ReadOnlyModelAdmin
from rotation.admin.refusals import deny
from rotation.audit import AuditAction, Origin, audit_record
from rotation.models import CredentialAge, RotationPolicy
from rotation.services.policy import past_policy_q, resources_with_credential_age

# Staff who see resources, and compliance, see credential ages.
VIEW_PERMISSIONS = ("rotation.view_resource", "rotation.view_auditevent")
EXPORT_FIELDS = [
    "resource",
    "name",
    "product",
    "installation",
    "credentials_since",
    "age_days",
    "policy_days",
    "past_policy",
]


@admin.register(RotationPolicy)
class RotationPolicyAdmin(admin.ModelAdmin):
    list_display = ["product", "max_age_days", "note", "updated_at"]
    search_fields = ["product"]

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            self._audit(request, obj, "changed" if change else "created", form.changed_data)

    def delete_model(self, request, obj):
        with transaction.atomic():
            super().delete_model(request, obj)
            self._audit(request, obj, "deleted", [])

    def delete_queryset(self, request, queryset):
        for policy in queryset:
            self.delete_model(request, policy)

    @staticmethod
    def _audit(request: HttpRequest, policy: RotationPolicy, change: str, fields: list) -> None:
        audit_record(
            action=AuditAction.POLICY_CHANGED,
            actor=request.user,
            origin=Origin.of(request),
            details={
                "product": policy.product,
                "max_age_days": policy.max_age_days,
                "change": change,
                "fields": list(fields),
            },
        )


class PastPolicyFilter(admin.SimpleListFilter):
    title = "past policy"
    parameter_name = "past_policy"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Past policy (overdue)"), ("no", "Within policy or no policy")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(past_policy_q())
        if self.value() == "no":
            return queryset.exclude(past_policy_q())
        return queryset


@admin.register(CredentialAge)
class CredentialAgeAdmin(ReadOnlyModelAdmin):
    """Credential age per resource against its product's policy; filter and export."""

    list_display = [
        "vercel_id",
        "name",
        "product",
        "installation_id_shown",
        "credentials_since",
        "age_days",
        "policy",
        "past_policy",
    ]
    list_filter = [PastPolicyFilter, "product", "status"]
    search_fields = ["vercel_id__exact", "name", "installation__vercel_id__exact"]
    list_select_related = ["installation"]
    show_full_result_count = False
    list_per_page = 100

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return (
            resources_with_credential_age()
            .select_related("installation")
            .order_by("credentials_since", "pk")
        )

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return any(request.user.has_perm(permission) for permission in VIEW_PERMISSIONS)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    @admin.display(description="installation", ordering="installation__vercel_id")
    def installation_id_shown(self, obj: Any) -> str:
        return obj.installation.vercel_id

    @admin.display(description="credentials since", ordering="credentials_since")
    def credentials_since(self, obj: Any) -> Any:
        return obj.credentials_since

    @admin.display(description="age (days)", ordering="credentials_since")
    def age_days(self, obj: Any) -> int:
        return (timezone.now() - obj.credentials_since).days

    @admin.display(description="policy (days)", ordering="policy_days")
    def policy(self, obj: Any) -> str:
        return str(obj.policy_days) if obj.policy_days else "off"

    @admin.display(description="past policy", boolean=True)
    def past_policy(self, obj: Any) -> bool:
        return _past_policy(obj)

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("export/csv/", wrap(self.export_view), name="rotation_credentialage_export_csv"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        query = request.GET.urlencode()
        extra_context = {**(extra_context or {}), "export_query": f"?{query}" if query else ""}
        return super().changelist_view(request, extra_context)

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        """The filtered list as CSV (audited: who exported which filter)."""
        if not self.has_view_permission(request):
            deny(request, action=AuditAction.CREDENTIAL_AGES_EXPORTED, details={"view": "csv"})
        queryset = self.get_changelist_instance(request).get_queryset(request)
        audit_record(
            action=AuditAction.CREDENTIAL_AGES_EXPORTED,
            actor=request.user,
            origin=Origin.of(request),
            details={"filters": request.GET.urlencode()},
        )
        response = StreamingHttpResponse(
            export_csv_lines(_csv_rows(queryset), header=EXPORT_FIELDS), content_type="text/csv"
        )
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="credential-ages-{stamp}.csv"'
        return response


def _past_policy(obj: Any) -> bool:
    days = obj.policy_days
    return bool(days) and obj.credentials_since < timezone.now() - timedelta(days=days)


def _csv_rows(queryset: QuerySet[Any]) -> Iterator[list[Any]]:
    now = timezone.now()
    for obj in queryset.iterator(chunk_size=500):
        yield [
            obj.vercel_id,
            obj.name,
            obj.product,
            obj.installation.vercel_id,
            obj.credentials_since,
            (now - obj.credentials_since).days,
            obj.policy_days,
            "yes" if _past_policy(obj) else "no",
        ]
