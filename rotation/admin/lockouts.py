"""Sign-in lockouts (django-axes): superusers see them and unlock by deleting; audited."""

from __future__ import annotations

from typing import Any

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from rotation.audit import AuditAction, Origin, audit_record


@admin.register(AccessAttempt)
class LockoutAdmin(AccessAttemptAdmin):
    """Failed sign-ins per user name and IP; deleting a row lifts its lockout."""

    actions: list[Any] = []  # no bulk "clean up": deleting is the one, audited, way

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def delete_model(self, request: HttpRequest, obj: AccessAttempt) -> None:
        self.delete_queryset(request, AccessAttempt.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        origin = Origin.of(request)
        with transaction.atomic():
            for attempt in queryset.select_for_update():
                audit_record(
                    action=AuditAction.AUTH_UNLOCKED,
                    actor=request.user,
                    origin=origin,
                    details={
                        "username": attempt.username or "",
                        "ip_address": attempt.ip_address or "",
                        "failures": attempt.failures_since_start,
                    },
                )
                attempt.delete()
