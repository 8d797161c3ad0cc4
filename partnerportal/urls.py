"""URL routes: the admin is the product."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from rotation.webhooks import vercel_webhook

# Every 403 is audited (rotation.admin.refusals).
handler403 = "rotation.admin.refusals.permission_denied_view"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/redeploy/", include("rotation.admin.redeploy")),
    path("admin/", admin.site.urls),
    path("webhooks/vercel/", vercel_webhook, name="vercel-webhook"),
]
