"""Admin for installations and resources. Tokens and secret values are never displayed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from rotation.admin.large_lists import CappedCountPaginator, page_row_count
from rotation.admin.marketplace import InstallationMarketplaceAdmin, TokenAgeFilter
from rotation.admin.rotate_action import RotateActionAdmin
from rotation.admin.staff_actions import ENDPOINT_SWITCH
from rotation.audit import AuditAction, Origin, RotationRefused, audit_record
from rotation.models import ConnectedProject, Installation, Resource, Rotation
from rotation.providers.declarations import resource_declaration_problems
from rotation.redeploy import connected_project_corrected
from rotation.services.endpoints import installations_switch_endpoint
from rotation.validators import validate_access_token, validate_vercel_id
from rotation.vercel import endpoints

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class _ResourceCount(TypedDict):
    _resource_count: int
    _open_rotation_count: int


def deprecated_endpoint_warning() -> str:
    """What staff are told on the page of an installation still on the deprecated endpoint."""
    sunset = endpoints.deprecated_sunset()
    text = (
        "This installation still pushes secrets through Vercel's deprecated endpoint, which "
        "Vercel is removing. Switch it to the current endpoint."
    )
    if sunset is not None and endpoints.deprecated_retired():
        text += f" Since {sunset:%Y-%m-%d} every push goes through the current endpoint anyway."
    elif sunset is not None:
        text += f" From {sunset:%Y-%m-%d} every push goes through the current endpoint."
    return text


class InstallationForm(forms.ModelForm):
    """Replaces the token without ever rendering it; ids and the token follow the import's
    rules (rotation.validators)."""

    new_access_token = forms.CharField(
        label="Replace access token",
        required=False,
        # Not stripped: a token with spaces or line breaks is refused, not silently changed.
        strip=False,
        max_length=4096,
        validators=[validate_access_token],
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Leave empty to keep the stored token. The stored token is never shown.",
    )

    class Meta:
        model = Installation
        fields = ["vercel_id", "name", "team_id", "contact_email", "endpoint", "status"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("vercel_id", "team_id"):
            if name in self.fields:  # absent when shown read-only
                self.fields[name].validators.append(validate_vercel_id)

    @method_decorator(sensitive_variables("cleaned"))
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
        "open_rotation_count",
    ]
    list_filter = ["endpoint", "status", TokenAgeFilter]
    show_full_result_count = False
    paginator = CappedCountPaginator
    actions = ["switch_to_current_endpoint", "rotate_access_token", "check_resources_on_vercel"]
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
        open_rotations = Rotation.objects.filter(state__in=Rotation.OPEN_STATES)
        return (
            super()
            .get_queryset(request)
            .annotate(
                _resource_count=page_row_count(Resource.objects.all(), to="installation"),
                _open_rotation_count=page_row_count(open_rotations, to="resource__installation"),
            )
        )

    @admin.display(description="resources", ordering="_resource_count")
    def resource_count(self, obj: WithAnnotations[Installation, _ResourceCount]) -> int:
        return obj._resource_count

    @admin.display(description="open rotations", ordering="_open_rotation_count")
    def open_rotation_count(self, obj: WithAnnotations[Installation, _ResourceCount]) -> int:
        return obj._open_rotation_count

    def has_switch_endpoint_permission(self, request: HttpRequest) -> bool:
        return ENDPOINT_SWITCH.allowed(request)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and not ENDPOINT_SWITCH.allowed(request):
            fields.append("endpoint")  # switching is the Support lead's action
        return fields

    @admin.action(description="Switch to the current endpoint", permissions=["switch_endpoint"])
    def switch_to_current_endpoint(
        self, request: HttpRequest, queryset: QuerySet[Installation]
    ) -> HttpResponseRedirect | None:
        """Every later push of the selected installations goes through the current endpoint."""
        try:
            result = installations_switch_endpoint(
                installation_ids=queryset.values_list("pk", flat=True),
                to=Installation.Endpoint.CURRENT,
                actor=request.user,
                origin=Origin.of(request),
                source="admin",
            )
        except RotationRefused as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return None
        text = f"{len(result.switched)} installation(s) switched to the current endpoint."
        if result.unchanged:
            text += f" {len(result.unchanged)} already used it."
        self.message_user(request, text, messages.SUCCESS)
        back = request.POST.get("_change_page")
        if back and queryset.filter(pk=back).exists():
            return HttpResponseRedirect(reverse("admin:rotation_installation_change", args=[back]))
        return None

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "POST" and (
            self.switch_to_current_endpoint.__name__ in request.POST.getlist("action")
        ):
            # Django would quietly answer "No action selected"; a forged POST is worth a record.
            ENDPOINT_SWITCH.guard(
                request,
                details={
                    "to": Installation.Endpoint.CURRENT,
                    "selected": len(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)),
                    "source": "admin",
                },
            )
        return super().changelist_view(request, extra_context)

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> HttpResponse:
        installation = kwargs.get("obj")
        if installation is not None and installation.endpoint == Installation.Endpoint.DEPRECATED:
            context["deprecated_endpoint_warning"] = deprecated_endpoint_warning()
            context["endpoint_switch_allowed"] = ENDPOINT_SWITCH.allowed(request)
            context["endpoint_switch_action"] = self.switch_to_current_endpoint.__name__
            context["action_checkbox_name"] = helpers.ACTION_CHECKBOX_NAME
        return super().render_change_form(request, context, *args, **kwargs)

    @admin.display(description="access token")
    def token_status(self, obj: Installation) -> SafeString | str:
        if not obj.has_access_token or obj.access_token_set_at is None:
            return "not set"
        when = obj.access_token_set_at.strftime("%Y-%m-%d %H:%M UTC")
        return format_html("set {} under key <code>{}</code>", when, obj.access_token_key_id)

    @method_decorator(sensitive_post_parameters("new_access_token"))
    def changeform_view(self, *args: Any, **kwargs: Any) -> Any:
        return super().changeform_view(*args, **kwargs)

    @method_decorator(sensitive_variables("new_token"))
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
            if change and "endpoint" in changed:
                audit_record(
                    action=AuditAction.INSTALLATION_ENDPOINT_SWITCHED,
                    actor=request.user,
                    origin=Origin.of(request),
                    installation=obj,
                    details={
                        "from": form.initial.get("endpoint"),
                        "to": obj.endpoint,
                        "automatic": False,
                        "source": "admin form",
                        "checked": False,
                    },
                )
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


class ResourceForm(forms.ModelForm):
    """The import's rules: the resource id (rotation.validators), and metadata and secret
    names that fit what the product's provider declares."""

    class Meta:
        model = Resource
        fields = ["installation", "vercel_id", "product", "name", "status", "secret_template"]
        fields += ["metadata"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "vercel_id" in self.fields:
            self.fields["vercel_id"].validators.append(validate_vercel_id)

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if "metadata" in cleaned and cleaned["metadata"] in (None, ""):
            cleaned["metadata"] = {}  # left empty: no metadata
        template = cleaned.get("secret_template")
        if "product" not in cleaned or "metadata" not in cleaned or not isinstance(template, list):
            return cleaned
        label = f"resource {cleaned.get('vercel_id') or '(new)'}"
        names = [e.get("name") for e in template if isinstance(e, dict)]
        for problem in resource_declaration_problems(
            label=label,
            product=cleaned["product"],
            metadata=cleaned["metadata"],
            secret_names=[name for name in names if isinstance(name, str)],
        ):
            self.add_error("secret_template" if "secret " in problem else "metadata", problem)
        return cleaned


class ConnectedProjectInline(admin.TabularInline):
    model = ConnectedProject
    extra = 0
    fields = ["project_id", "source", "connected_at", "disconnected_at"]


@admin.register(Resource)
class ResourceAdmin(RotateActionAdmin):
    form = ResourceForm
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
        "metadata",
        "created_at",
        "updated_at",
    ]
    inlines = [ConnectedProjectInline]
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 100
    # Columns an index can sort a page of 100,000 rows by.
    sortable_by = ["vercel_id", "name", "updated_at"]

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
