"""Admin for rotating resources: the bulk action, the batch page, read-only rotation records.

Thin on purpose: parse input, check permission, call one service, report, redirect.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from rotation.admin.refusals import deny
from rotation.audit import AuditAction, Origin
from rotation.models import AuditEvent, Installation, Rotation, RotationBatch
from rotation.selectors import batch_progress
from rotation.services import (
    CANCELLABLE_STATES,
    RotationRefused,
    batch_cancel,
    batch_retry_failed,
    rotation_cancel,
    rotation_request,
    rotation_request_preview,
    rotation_retry,
)

ROTATE_PERMISSION = "rotation.rotate_resource"
EMERGENCY_PERMISSION = "rotation.rotate_resource_emergency"
RETRY_PERMISSION = "rotation.retry_rotation"
CANCEL_PERMISSION = "rotation.cancel_rotation"

# How many refusals, failures and rotations the pages list before linking to the full list.
LIST_LIMIT = 100

# --- The action on the resource list ---------------------------------------------------------


class RotateForm(forms.Form):
    """The fields staff fill in on the confirmation page."""

    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why these credentials are rotated; kept in the audit trail.",
    )
    ticket = forms.CharField(max_length=100, required=False, help_text="Ticket reference.")
    emergency = forms.BooleanField(
        required=False,
        label="Emergency: expire the old credentials as soon as the push lands",
    )

    def __init__(self, *args: Any, allow_emergency: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not allow_emergency:
            # Not offered; a forged value still reaches the service, which refuses it.
            del self.fields["emergency"]


def _selection_fields(request: HttpRequest) -> dict[str, Any]:
    """What the confirmation form re-posts so the second POST selects the same resources."""
    select_across = request.POST.get("select_across") == "1"
    selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
    # With select_across the changelist's filters (kept in the URL) define the selection;
    # Django only needs one checkbox value to accept the POST, not all N of them.
    return {"select_across": select_across, "selected": selected[:1] if select_across else selected}


@admin.action(description="Rotate and push to Vercel", permissions=["rotate"])
def rotate_and_push(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> HttpResponse | None:
    """Confirmation page on the first POST; with post=yes, request one batch of rotations."""
    if not request.user.has_perm(ROTATE_PERMISSION):
        # get_actions() already hides the action; this guards direct calls.
        deny(request, action=AuditAction.ROTATION_REQUEST_DENIED)
    allow_emergency = request.user.has_perm(EMERGENCY_PERMISSION)
    resource_ids = list(queryset.order_by().values_list("pk", flat=True))
    confirmed = request.POST.get("post") == "yes"
    form = RotateForm(request.POST if confirmed else None, allow_emergency=allow_emergency)
    expected = request.POST.get("expected_count")
    changed = confirmed and expected is not None and expected != str(len(resource_ids))
    if changed:
        form.add_error(
            None,
            f"The selection changed since the confirmation page was shown: "
            f"{len(resource_ids)} resources match now. Check the list and confirm again.",
        )
    if confirmed and form.is_valid():
        emergency = form.cleaned_data.get("emergency", False) or (
            not allow_emergency and request.POST.get("emergency") in ("on", "1", "true")
        )
        try:
            batch = rotation_request(
                resource_ids=resource_ids,
                actor=request.user,
                reason=form.cleaned_data["reason"],
                ticket=form.cleaned_data["ticket"],
                emergency=emergency,
                source=RotationBatch.Source.ADMIN,
                origin=Origin.of(request),
            )
        except RotationRefused as exc:
            form.add_error(None, str(exc))
        else:
            requested = batch.rotations.count()
            refused = len(batch.refused)
            text = f"Batch #{batch.pk}: {requested} rotation(s) requested"
            if refused:
                text += f", {refused} resource(s) refused (listed on the batch page)"
            modeladmin.message_user(
                request, text + ".", messages.WARNING if refused else messages.SUCCESS
            )
            return HttpResponseRedirect(
                reverse("admin:rotation_rotationbatch_change", args=[batch.pk])
            )
    preview = rotation_request_preview(
        resource_ids=resource_ids, actor=request.user, origin=Origin.of(request)
    )
    opts = modeladmin.model._meta
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Rotate and push to Vercel",
        "subtitle": None,
        "opts": opts,
        "media": modeladmin.media + form.media,
        "form": form,
        "preview": preview,
        "refused": preview.refused[:LIST_LIMIT],
        "refused_more": max(0, preview.refused_count - min(LIST_LIMIT, len(preview.refused))),
        "sample_more": max(0, preview.will_rotate - len(preview.sample)),
        "count": len(resource_ids),
        "allow_emergency": allow_emergency,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        **_selection_fields(request),
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(
        request, "admin/rotation/resource/rotate_and_push_confirmation.html", context
    )


class RotateActionMixin:
    """Adds the rotate action to ResourceAdmin and audits forged attempts to run it."""

    actions = [rotate_and_push]

    def has_rotate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(ROTATE_PERMISSION)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        if (
            request.method == "POST"
            and rotate_and_push.__name__ in request.POST.getlist("action")
            and not self.has_rotate_permission(request)
        ):
            # Django would quietly answer "No action selected"; a forged POST is worth a record.
            deny(
                request,
                action=AuditAction.ROTATION_REQUEST_DENIED,
                details={
                    "selected": len(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)),
                    "select_across": request.POST.get("select_across") == "1",
                },
            )
        return super().changelist_view(request, extra_context)


# --- Filters that stay cheap with many rows --------------------------------------------------


class InstallationFilter(admin.SimpleListFilter):
    """Lists a few installations but accepts any `?installation=icfg_…`."""

    title = "installation"
    parameter_name = "installation"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin):
        values = Installation.objects.order_by("vercel_id").values_list("vercel_id", flat=True)
        return [(value, value) for value in values[:50]]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value():
            return queryset.filter(resource__installation__vercel_id=self.value())
        return queryset


class BatchFilter(admin.SimpleListFilter):
    """Lists recent batches but accepts any `?batch=<id>` (the batch page links here)."""

    title = "batch"
    parameter_name = "batch"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin):
        ids = RotationBatch.objects.order_by("-id").values_list("id", flat=True)[:20]
        return [(str(pk), f"Batch #{pk}") for pk in ids]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(batch_id=int(value))
        return queryset


# --- Read-only records -----------------------------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by services only; forms never add, change or delete them."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _guarded_post(request: HttpRequest, *, permission: str, action: str, **refs: Any) -> None:
    """Deny (and audit) a button POST by someone without the permission."""
    if not request.user.has_perm(permission):
        deny(request, action=action, **refs)


@admin.register(RotationBatch)
class RotationBatchAdmin(ReadOnlyAdmin):
    list_display = [
        "__str__",
        "created_at",
        "requested_by_username",
        "source",
        "emergency",
        "ticket",
        "short_reason",
        "size",
    ]
    list_filter = ["source", "emergency"]
    search_fields = ["ticket__exact", "requested_by_username__exact"]
    ordering = ["-id"]
    show_full_result_count = False
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # A correlated subquery runs for the page's rows only, unlike a GROUP BY over all.
        size = (
            Rotation.objects.filter(batch=OuterRef("pk"))
            .order_by()
            .values("batch")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return super().get_queryset(request).annotate(_size=Coalesce(Subquery(size), 0))

    @admin.display(description="rotations")
    def size(self, obj: RotationBatch) -> int:
        return obj._size

    @admin.display(description="reason")
    def short_reason(self, obj: RotationBatch) -> str:
        return obj.reason if len(obj.reason) <= 60 else obj.reason[:59] + "…"

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "<int:batch_id>/progress/", wrap(self.progress_view), name="rotation_batch_progress"
            ),
            path(
                "<int:batch_id>/retry-failed/",
                wrap(self.retry_failed_view),
                name="rotation_batch_retry_failed",
            ),
            path("<int:batch_id>/cancel/", wrap(self.cancel_view), name="rotation_batch_cancel"),
            *super().get_urls(),
        ]

    def _batch(self, request: HttpRequest, batch_id: Any) -> RotationBatch:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(RotationBatch, pk=batch_id)

    @staticmethod
    def _progress(batch: RotationBatch) -> dict[str, Any]:
        """The selector's counts plus `finished`: nothing of the batch is still in flight."""
        progress = batch_progress(batch=batch)
        return {
            "batch": batch.pk,
            "total": progress["total"],
            "percent": progress["percent"],
            "counts": progress["counts"],
            "finished": progress["done"],
            "refused": progress["refused"],
        }

    def progress_view(self, request: HttpRequest, batch_id: int) -> JsonResponse:
        """Polled by the batch page: counts per state, total and percent."""
        return JsonResponse(self._progress(self._batch(request, batch_id)))

    def change_view(self, request: HttpRequest, object_id: str, form_url="", extra_context=None):
        """The batch page: progress, refusals, failures, buttons, links to each rotation."""
        batch = self._batch(request, object_id)
        rotations = batch.rotations.select_related("resource__installation").order_by("id")
        failed = rotations.filter(state=Rotation.State.FAILED)
        progress = self._progress(batch)
        changelist = reverse("admin:rotation_rotation_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": str(batch),
            "subtitle": None,
            "opts": self.opts,
            "original": batch,
            "batch": batch,
            "progress": progress,
            "states": [
                (state, label, progress["counts"][state]) for state, label in Rotation.State.choices
            ],
            "refused": batch.refused[:LIST_LIMIT],
            "refused_more": max(0, len(batch.refused) - LIST_LIMIT),
            "failures": failed[:LIST_LIMIT],
            "failures_url": f"{changelist}?batch={batch.pk}&state__exact=failed",
            "rotations": rotations[:LIST_LIMIT],
            "rotations_more": max(0, progress["total"] - LIST_LIMIT),
            "rotations_url": f"{changelist}?batch={batch.pk}",
            "can_retry": request.user.has_perm(RETRY_PERMISSION),
            "can_cancel": request.user.has_perm(CANCEL_PERMISSION),
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/rotation/rotationbatch/batch.html", context)

    @staticmethod
    def _batch_url(batch: RotationBatch) -> str:
        return reverse("admin:rotation_rotationbatch_change", args=[batch.pk])

    @method_decorator(require_POST)
    def retry_failed_view(self, request: HttpRequest, batch_id: int) -> HttpResponse:
        batch = self._batch(request, batch_id)
        _guarded_post(
            request, permission=RETRY_PERMISSION, action=AuditAction.BATCH_RETRIED, batch=batch
        )
        try:
            count = batch_retry_failed(batch=batch, actor=request.user, origin=Origin.of(request))
        except RotationRefused as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            level = messages.SUCCESS if count else messages.WARNING
            self.message_user(request, f"{count} failed rotation(s) queued again.", level)
        return HttpResponseRedirect(self._batch_url(batch))

    @method_decorator(require_POST)
    def cancel_view(self, request: HttpRequest, batch_id: int) -> HttpResponse:
        batch = self._batch(request, batch_id)
        _guarded_post(
            request, permission=CANCEL_PERMISSION, action=AuditAction.BATCH_CANCELLED, batch=batch
        )
        try:
            count = batch_cancel(batch=batch, actor=request.user, origin=Origin.of(request))
        except RotationRefused as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            level = messages.SUCCESS if count else messages.WARNING
            self.message_user(request, f"{count} rotation(s) cancelled.", level)
        return HttpResponseRedirect(self._batch_url(batch))


@admin.register(Rotation)
class RotationAdmin(ReadOnlyAdmin):
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
    show_full_result_count = False
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
                    "keep_old_until",
                    "expired_at",
                    "completed_at",
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
    def batch_link(self, obj: Rotation) -> str:
        url = reverse("admin:rotation_rotationbatch_change", args=[obj.batch_id])
        return format_html('<a href="{}">Batch #{}</a>', url, obj.batch_id)

    @admin.display(description="resource")
    def resource_link(self, obj: Rotation) -> str:
        url = reverse("admin:rotation_resource_change", args=[obj.resource_id])
        return format_html('<a href="{}">{}</a>', url, obj.resource)

    @admin.display(description="events")
    def timeline(self, obj: Rotation) -> str:
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

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:rotation_id>/retry/", wrap(self.retry_view), name="rotation_rotation_retry"),
            path(
                "<int:rotation_id>/cancel/", wrap(self.cancel_view), name="rotation_rotation_cancel"
            ),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url="", extra_context=None):
        extra = {
            "can_retry": request.user.has_perm(RETRY_PERMISSION),
            "can_cancel": request.user.has_perm(CANCEL_PERMISSION),
            "cancellable_states": [str(state) for state in CANCELLABLE_STATES],
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra)

    def _rotation(self, request: HttpRequest, rotation_id: int) -> Rotation:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(Rotation.objects.select_related("resource"), pk=rotation_id)

    @staticmethod
    def _rotation_url(rotation: Rotation) -> str:
        return reverse("admin:rotation_rotation_change", args=[rotation.pk])

    @method_decorator(require_POST)
    def retry_view(self, request: HttpRequest, rotation_id: int) -> HttpResponse:
        rotation = self._rotation(request, rotation_id)
        _guarded_post(
            request,
            permission=RETRY_PERMISSION,
            action=AuditAction.ROTATION_RETRIED,
            rotation=rotation,
        )
        try:
            rotation_retry(rotation=rotation, actor=request.user, origin=Origin.of(request))
        except RotationRefused as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, f"{rotation} queued again.", messages.SUCCESS)
        return HttpResponseRedirect(self._rotation_url(rotation))

    @method_decorator(require_POST)
    def cancel_view(self, request: HttpRequest, rotation_id: int) -> HttpResponse:
        rotation = self._rotation(request, rotation_id)
        _guarded_post(
            request,
            permission=CANCEL_PERMISSION,
            action=AuditAction.ROTATION_CANCELLED,
            rotation=rotation,
        )
        try:
            rotation_cancel(rotation=rotation, actor=request.user, origin=Origin.of(request))
        except RotationRefused as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, f"{rotation} cancelled.", messages.SUCCESS)
        return HttpResponseRedirect(self._rotation_url(rotation))


def _event_summary(details: dict[str, Any]) -> str:
    """A short line from an event's details (they never hold secret values)."""
    keys = ("status", "code", "message", "error", "state", "attempt")
    parts = [f"{key}={details[key]}" for key in keys if key in details]
    return ", ".join(parts)[:300]
