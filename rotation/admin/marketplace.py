"""The installation list's Marketplace actions and columns: "Rotate Vercel access token"
(with a confirmation page, like `delete_selected`), "Check resources against Vercel", the
token's age and a filter by it. Both actions have their own permission (Support lead)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django_q.tasks import async_task

from rotation.admin.staff_actions import StaffAction
from rotation.audit import AuditAction, Origin, RotationRefused
from rotation.models import Installation, InventoryReport
from rotation.services.installation_tokens import installation_tokens_rotate_request
from rotation.services.inventory import inventory_check_start

TOKEN_ROTATE = StaffAction(
    "rotation.rotate_installation_token", AuditAction.TOKEN_ROTATION_REQUESTED
)
INVENTORY = StaffAction("rotation.sync_vercel_resources", AuditAction.INVENTORY_CHECKED)
INVENTORY_TASK = "rotation.tasks_marketplace.inventory_check_report"
# (parameter value, label, lower bound in days, upper bound in days)
TOKEN_AGES = (
    ("lt30", "under 30 days", None, 30),
    ("30to90", "30 to 90 days", 30, 90),
    ("90to365", "90 days to a year", 90, 365),
    ("gt365", "over a year", 365, None),
)


class TokenAgeFilter(admin.SimpleListFilter):
    """Installations by the age of their stored access token (since set or rotated)."""

    title = "access token age"
    parameter_name = "token_age"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return [(value, label) for value, label, _, _ in TOKEN_AGES] + [("unknown", "unknown")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "unknown":
            return queryset.filter(access_token_set_at__isnull=True)
        now = timezone.now()
        for name, _, older_than, younger_than in TOKEN_AGES:
            if value == name:
                if older_than is not None:
                    queryset = queryset.filter(
                        access_token_set_at__lte=now - timedelta(days=older_than)
                    )
                if younger_than is not None:
                    queryset = queryset.filter(
                        access_token_set_at__gt=now - timedelta(days=younger_than)
                    )
        return queryset


def token_age_text(installation: Installation) -> str:
    """ "12 days", "3 hours", or "unknown"."""
    if installation.access_token_set_at is None:
        return "unknown"
    age = timezone.now() - installation.access_token_set_at
    if age >= timedelta(days=1):
        return f"{age.days} day{'s' if age.days != 1 else ''}"
    hours = int(age.total_seconds() // 3600)
    return f"{hours} hour{'s' if hours != 1 else ''}"


class InstallationMarketplaceAdmin(admin.ModelAdmin):
    """Mixed into the installation admin: the actions, the token age and rotation columns."""

    @admin.display(description="token age", ordering="access_token_set_at")
    def token_age(self, obj: Installation) -> str:
        return token_age_text(obj)

    @admin.display(description="token rotation")
    def token_rotation(self, obj: Installation) -> SafeString | str:
        if not obj.token_rotation_step:
            return "—"
        step = obj.get_token_rotation_step_display()
        if obj.token_rotation_error and obj.token_rotation_next_attempt_at is None:
            return format_html(
                "stopped at: {}<br><span class='errornote'>{}</span>",
                step,
                obj.token_rotation_error,
            )
        return format_html("running: {}", step)

    def has_rotate_token_permission(self, request: HttpRequest) -> bool:
        return TOKEN_ROTATE.allowed(request)

    def has_sync_resources_permission(self, request: HttpRequest) -> bool:
        return INVENTORY.allowed(request)

    @admin.action(description="Rotate Vercel access token", permissions=["rotate_token"])
    def rotate_access_token(
        self, request: HttpRequest, queryset: QuerySet[Installation]
    ) -> HttpResponse | None:
        """Confirmation page on the first POST; with post=yes, start the rotations."""
        TOKEN_ROTATE.guard(request)
        installations = list(queryset.order_by("vercel_id"))
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Rotate Vercel access tokens",
                "installations": installations,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "select_across": request.POST.get("select_across") == "1",
            }
            return TemplateResponse(
                request, "admin/rotation/installation/rotate_token_confirmation.html", context
            )
        try:
            result = installation_tokens_rotate_request(
                installation_ids=[installation.pk for installation in installations],
                actor=request.user,
                origin=Origin.of(request),
            )
        except RotationRefused as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return None
        if result.started:
            self.message_user(
                request,
                f"Token rotation started for {len(result.started)} installation"
                f"{'s' if len(result.started) != 1 else ''}: {', '.join(result.started)}.",
                messages.SUCCESS,
            )
        for vercel_id, reason in result.refused:
            self.message_user(request, f"{vercel_id}: not started, {reason}.", messages.WARNING)
        return None

    @admin.action(description="Check resources against Vercel", permissions=["sync_resources"])
    def check_resources_on_vercel(
        self, request: HttpRequest, queryset: QuerySet[Installation]
    ) -> None:
        """Record a check of the selected installations and run it in a task."""
        INVENTORY.guard(request)
        try:
            with transaction.atomic():
                report = inventory_check_start(
                    installation_ids=list(queryset.values_list("pk", flat=True)),
                    source=InventoryReport.Source.ADMIN,
                    actor=request.user,
                    origin=Origin.of(request),
                )
                transaction.on_commit(lambda: async_task(INVENTORY_TASK, report.pk))
        except RotationRefused as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        url = reverse("admin:rotation_inventoryreport_change", args=[report.pk])
        self.message_user(
            request,
            format_html(
                "Inventory check #{} queued: <a href='{}'>see its report</a>.", report.pk, url
            ),
            messages.SUCCESS,
        )
