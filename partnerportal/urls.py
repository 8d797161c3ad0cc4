"""URL routes: the admin is the product."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from rotation.partner_api.views import secrets_rotate
from rotation.webhooks import vercel_webhook

# Every 403 is audited (rotation.admin.refusals).
handler403 = "rotation.admin.refusals.permission_denied_view"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/redeploy/", include("rotation.admin.redeploy")),
    path("admin/", admin.site.urls),
    path("webhooks/vercel/", vercel_webhook, name="vercel-webhook"),
    # Vercel's Request Secrets Rotation, at the path Vercel appends to the integration's URL.
    path(
        "v1/installations/<str:installation_id>/resources/<str:resource_id>/secrets/rotate",
        secrets_rotate,
        name="vercel-secrets-rotate",
    ),
]
