"""Admin for installations and resources. Tokens and secret values are never displayed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from rotation.admin.marketplace import InstallationMarketplaceAdmin, TokenAgeFilter
from rotation.admin.rotate_action import RotateActionAdmin
from rotation.audit import AuditAction, Origin, audit_record
from rotation.models import ConnectedProject, Installation, Resource
from rotation.redeploy import connected_project_corrected

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class _ResourceCount(TypedDict):
    _resource_count: int


class InstallationForm(forms.ModelForm):
    """Replaces the token without ever rendering it."""

    new_access_token = forms.CharField(
        label="Replace access token",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Leave empty to keep the stored token. The stored token is never shown.",
    )

    class Meta:
        model = Installation
        fields = ["vercel_id", "name", "team_id", "contact_email", "endpoint", "status"]

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if not self.instance.pk and not cleaned.get("new_access_token"):
            self.add_error("new_access_token", "A new installation needs its access token.")
        return cleaned


@admin.register(Installation)
class InstallationAdmin(InstallationMarketplaceAdmin):
    form = InstallationForm
    list_display = [
        "vercel_id",
        "name",
        "team_id",
        "endpoint",
        "status",
        "token_status",
        "token_age",
        "token_rotation",
        "resource_count",
    ]
    list_filter = ["endpoint", "status", TokenAgeFilter]
    actions = ["rotate_access_token", "check_resources_on_vercel"]
    search_fields = ["vercel_id__exact", "name", "team_id__exact", "contact_email"]
    readonly_fields = [
        "token_status",
        "token_age",
        "token_rotation",
        "created_at",
        "updated_at",
        "removed_at",
    ]
    fieldsets = [
        (None, {"fields": ["vercel_id", "name", "team_id", "contact_email"]}),
        ("Vercel", {"fields": ["endpoint", "status", "removed_at"]}),
        (
            "Access token",
            {"fields": ["token_status", "token_age", "token_rotation", "new_access_token"]},
        ),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Installation]:
        return super().get_queryset(request).annotate(_resource_count=Count("resources"))

    @admin.display(description="resources", ordering="_resource_count")
    def resource_count(self, obj: WithAnnotations[Installation, _ResourceCount]) -> int:
        return obj._resource_count

    @admin.display(description="access token")
    def token_status(self, obj: Installation) -> SafeString | str:
        if not obj.has_access_token or obj.access_token_set_at is None:
            return "not set"
        when = obj.access_token_set_at.strftime("%Y-%m-%d %H:%M UTC")
        return format_html("set {} under key <code>{}</code>", when, obj.access_token_key_id)

    def save_model(self, request, obj, form, change):
        new_token = form.cleaned_data.get("new_access_token")
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            if new_token:
                obj.set_access_token(new_token)
                obj.save(
                    update_fields=[
                        "access_token_encrypted",
                        "access_token_key_id",
                        "access_token_set_at",
                    ]
                )
            changed = [name for name in form.changed_data if name != "new_access_token"]
            if new_token:
                audit_record(
                    action=AuditAction.INSTALLATION_TOKEN_REPLACED,
                    actor=request.user,
                    origin=Origin.of(request),
                    installation=obj,
                    details={"key_id": obj.access_token_key_id},
                )
            if changed or not change:
                audit_record(
                    action=AuditAction.INSTALLATION_CHANGED,
                    actor=request.user,
                    origin=Origin.of(request),
                    installation=obj,
                    details={"fields": changed, "created": not change},
                )


class ConnectedProjectInline(admin.TabularInline):
    model = ConnectedProject
    extra = 0
    fields = ["project_id", "source", "connected_at", "disconnected_at"]


@admin.register(Resource)
class ResourceAdmin(RotateActionAdmin):
    list_display = ["vercel_id", "name", "product", "installation_link", "status", "updated_at"]
    list_filter = ["status", "product", "installation__endpoint", "installation"]
    list_select_related = ["installation"]
    search_fields = ["vercel_id__exact", "name", "installation__vercel_id__exact"]
    readonly_fields = ["created_at", "updated_at", "secret_names"]
    raw_id_fields = ["installation"]
    fields = [
        "installation",
        "vercel_id",
        "product",
        "name",
        "status",
        "secret_template",
        "secret_names",
        "created_at",
        "updated_at",
    ]
    inlines = [ConnectedProjectInline]
    show_full_result_count = False
    list_per_page = 100

    @admin.display(description="installation", ordering="installation__vercel_id")
    def installation_link(self, obj: Resource) -> str:
        return obj.installation.vercel_id

    @admin.display(description="secret names")
    def secret_names(self, obj: Resource) -> str:
        names = [f"{item.get('prefix') or ''}{item['name']}" for item in obj.secret_template]
        return ", ".join(names) or "none"

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            audit_record(
                action=AuditAction.RESOURCE_CHANGED,
                actor=request.user,
                origin=Origin.of(request),
                resource=obj,
                details={"fields": list(form.changed_data), "created": not change},
            )

    def save_formset(self, request, form, formset, change):
        if formset.model is not ConnectedProject:
            return super().save_formset(request, form, formset, change)
        # Hand corrections of connected projects are audited and update waiting rotations.
        with transaction.atomic():
            projects = formset.save(commit=False)
            for project in formset.deleted_objects:
                project.delete()
                connected_project_corrected(
                    project=project, actor=request.user, change="deleted", origin=Origin.of(request)
                )
            added = {id(project) for project in formset.new_objects}
            for project in projects:
                if id(project) in added:
                    project.source = ConnectedProject.Source.MANUAL
                project.save()
                connected_project_corrected(
                    project=project,
                    actor=request.user,
                    change="added" if id(project) in added else "changed",
                    origin=Origin.of(request),
                )
            formset.save_m2m()
