"""Top-level URL routes."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/audit/report/", include("audit.urls")),
    path("admin/", admin.site.urls),
]
