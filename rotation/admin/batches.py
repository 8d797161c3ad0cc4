"""The batch page: progress (polled as JSON), refusals, failures, retry and cancel buttons."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, TypedDict

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST

from rotation.admin.large_lists import CappedCountPaginator, page_row_count
from rotation.admin.read_only import ReadOnlyModelAdmin
from rotation.admin.staff_actions import BATCH_CANCEL, BATCH_RETRY_FAILED, StaffAction
from rotation.models import Rotation, RotationBatch
from rotation.selectors import BatchProgress, batch_progress
from rotation.services import batch_cancel, batch_retry_failed

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

# How many refusals, failures and rotations a page lists before linking to the full list.
LIST_LIMIT = 100


class _Size(TypedDict):
    _size: int


def progress_json(progress: BatchProgress) -> dict[str, Any]:
    """What the batch page's script polls: `finished` is true once nothing is in flight."""
    return {
        "batch": progress.batch_id,
        "total": progress.total,
        "percent": progress.percent,
        "counts": progress.counts,
        "finished": progress.finished,
        "refused": progress.refused,
        "rate_limited_until": (
            progress.rate_limited_until.isoformat() if progress.rate_limited_until else None
        ),
    }


@admin.register(RotationBatch)
class RotationBatchAdmin(ReadOnlyModelAdmin):
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
    paginator = CappedCountPaginator
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet[RotationBatch]:
        size = page_row_count(Rotation.objects.all(), to="batch")
        return super().get_queryset(request).annotate(_size=size)

    @admin.display(description="rotations")
    def size(self, obj: WithAnnotations[RotationBatch, _Size]) -> int:
        return obj._size

    @admin.display(description="reason")
    def short_reason(self, obj: RotationBatch) -> str:
        return obj.reason if len(obj.reason) <= 60 else obj.reason[:59] + "…"

    def get_urls(self) -> list[URLPattern]:
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

    def _batch(
        self, request: HttpRequest, batch_id: Any, *, action: StaffAction | None = None
    ) -> RotationBatch:
        """The batch a page (or the button `action`) is about; 403 (audited) without the
        view permission or the button's, checked before the lookup."""
        if action is not None and not (
            self.has_view_permission(request) and action.allowed(request)
        ):
            action.deny(request, batch=batch_id)
        if not self.has_view_permission(request):
            raise PermissionDenied  # audited by the 403 handler
        return get_object_or_404(RotationBatch, pk=batch_id)

    def progress_view(self, request: HttpRequest, batch_id: int) -> JsonResponse:
        """Polled by the batch page: counts per state, total, percent and `finished`."""
        return JsonResponse(progress_json(batch_progress(batch=self._batch(request, batch_id))))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The batch page: progress, refusals, failures, buttons, links to each rotation."""
        batch = self._batch(request, object_id)
        rotations = batch.rotations.select_related("resource__installation").order_by("id")
        failed = rotations.filter(state=Rotation.State.FAILED)
        progress = batch_progress(batch=batch)
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
                (state, label, progress.counts[state]) for state, label in Rotation.State.choices
            ],
            "refused": batch.refused[:LIST_LIMIT],
            "refused_more": max(0, len(batch.refused) - LIST_LIMIT),
            "failures": failed[:LIST_LIMIT],
            "failures_url": f"{changelist}?batch={batch.pk}&state__exact=failed",
            "rotations": rotations[:LIST_LIMIT],
            "rotations_more": max(0, progress.total - LIST_LIMIT),
            "rotations_url": f"{changelist}?batch={batch.pk}",
            "can_retry": BATCH_RETRY_FAILED.allowed(request),
            "can_cancel": BATCH_CANCEL.allowed(request),
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/rotation/rotationbatch/batch.html", context)

    @staticmethod
    def _batch_url(batch: RotationBatch) -> str:
        return reverse("admin:rotation_rotationbatch_change", args=[batch.pk])

    @method_decorator(require_POST)
    def retry_failed_view(self, request: HttpRequest, batch_id: int) -> HttpResponse:
        batch = self._batch(request, batch_id, action=BATCH_RETRY_FAILED)
        return BATCH_RETRY_FAILED.run(
            request,
            partial(batch_retry_failed, batch=batch),
            report=lambda count: (
                f"{count} failed rotation(s) queued again.",
                messages.SUCCESS if count else messages.WARNING,
            ),
            redirect_to=self._batch_url(batch),
            batch=batch,
        )

    @method_decorator(require_POST)
    def cancel_view(self, request: HttpRequest, batch_id: int) -> HttpResponse:
        batch = self._batch(request, batch_id, action=BATCH_CANCEL)
        return BATCH_CANCEL.run(
            request,
            partial(batch_cancel, batch=batch),
            report=lambda count: (
                f"{count} rotation(s) cancelled.",
                messages.SUCCESS if count else messages.WARNING,
            ),
            redirect_to=self._batch_url(batch),
            batch=batch,
        )
