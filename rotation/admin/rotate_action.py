"""The "Rotate and push to Vercel" action of the resource list and its confirmation page.

Built like Django's `delete_selected`: the first POST shows the confirmation form, the second
(`post=yes`) requests one batch of rotations through `rotation_request`.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from rotation.admin.batches import LIST_LIMIT
from rotation.admin.staff_actions import ROTATE
from rotation.audit import Origin
from rotation.models import RotationBatch
from rotation.services import RotationRefused, rotation_request, rotation_request_preview

EMERGENCY_PERMISSION = "rotation.rotate_resource_emergency"


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
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any]
) -> HttpResponse | None:
    """Confirmation page on the first POST; with post=yes, request one batch of rotations."""
    # get_actions() already hides the action; this guards direct calls.
    ROTATE.guard(request)
    allow_emergency = request.user.has_perm(EMERGENCY_PERMISSION)
    # The selection stays a queryset: "select all N" is never loaded into Python.
    selection = queryset.order_by()
    count = selection.count()
    confirmed = request.POST.get("post") == "yes"
    form = RotateForm(request.POST if confirmed else None, allow_emergency=allow_emergency)
    expected = request.POST.get("expected_count")
    changed = confirmed and expected is not None and expected != str(count)
    if changed:
        form.add_error(
            None,
            f"The selection changed since the confirmation page was shown: "
            f"{count} resources match now. Check the list and confirm again.",
        )
    if confirmed and form.is_valid():
        emergency = form.cleaned_data.get("emergency", False) or (
            not allow_emergency and request.POST.get("emergency") in ("on", "1", "true")
        )
        try:
            batch = rotation_request(
                resource_ids=selection,
                actor=request.user,
                reason=form.cleaned_data["reason"],
                ticket=form.cleaned_data["ticket"],
                emergency=emergency,
                source=RotationBatch.Source.ADMIN,
                origin=Origin.of(request),
            )
        except RotationRefused as exc:
            form.add_error(None, exc.message)
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
        resource_ids=selection, actor=request.user, origin=Origin.of(request)
    )
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Rotate and push to Vercel",
        "subtitle": None,
        "opts": modeladmin.model._meta,
        "media": modeladmin.media + form.media,
        "form": form,
        "preview": preview,
        "refused": preview.refused[:LIST_LIMIT],
        "refused_more": max(0, preview.refused_count - min(LIST_LIMIT, len(preview.refused))),
        "sample_more": max(0, preview.will_rotate - len(preview.sample)),
        "count": count,
        "allow_emergency": allow_emergency,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        **_selection_fields(request),
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(
        request, "admin/rotation/resource/rotate_and_push_confirmation.html", context
    )


class RotateActionAdmin(admin.ModelAdmin):
    """A ModelAdmin offering the rotate action; a forged attempt to run it is audited."""

    actions = [rotate_and_push]

    def has_rotate_permission(self, request: HttpRequest) -> bool:
        return ROTATE.allowed(request)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "POST" and rotate_and_push.__name__ in request.POST.getlist("action"):
            # Django would quietly answer "No action selected"; a forged POST is worth a record.
            ROTATE.guard(
                request,
                details={
                    "selected": len(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)),
                    "select_across": request.POST.get("select_across") == "1",
                },
            )
        return super().changelist_view(request, extra_context)
