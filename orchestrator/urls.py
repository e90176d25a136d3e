"""Top-level URL routes."""

from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.urls import include, path
from django.views import defaults
from django.views.generic import RedirectView

from orchestrator.api.problems import django_error
from orchestrator.views import health, kpis, shell
from orchestrator.views.metrics import metrics_view

urlpatterns = [
    path("", shell.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("login/", shell.LoginView.as_view(), name="login"),
    path("logout/", LogoutView.as_view(next_page="login"), name="logout"),
    path("inbox/", include("governance.urls")),
    path("runs/", include("orchestrator.runs_urls")),
    path("kpis/", kpis.kpis, name="kpis"),
    path("admin/login/", shell.admin_login),
    path("api/v1/", include("orchestrator.api.urls")),
    path("audit/", include("audit.urls")),
    path(
        "admin/audit/report/", RedirectView.as_view(pattern_name="audit:report", query_string=True)
    ),
    path("admin/", admin.site.urls),
]


def _is_api(request) -> bool:
    """Tell whether a request is for the API (its errors are problem+json, never HTML)."""
    return request.path.startswith("/api/")


def handler404(request, exception=None):
    """An unknown URL: a problem for the API, Django's page elsewhere."""
    if _is_api(request):
        return django_error(request, 404, "No API resource at this address.")
    return defaults.page_not_found(request, exception)


def handler500(request):
    """A server error: a problem for the API, Django's page elsewhere."""
    if _is_api(request):
        return django_error(request, 500, "The server failed to handle this request.")
    return defaults.server_error(request)
