"""URLs of the audit pages (under /audit/)."""

from django.urls import path

from audit import views

app_name = "audit"

urlpatterns = [
    path("", views.report, name="report"),
    path("export.csv", views.export, {"fmt": "csv"}, name="export-csv"),
    path("export.json", views.export, {"fmt": "json"}, name="export-json"),
    path("entries/<int:pk>/", views.entry, name="entry"),
    path("evidence/", views.evidence, name="evidence"),
    path("health/", views.health, name="health"),
]
