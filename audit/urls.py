"""URLs of the audit report."""

from django.urls import path

from audit import views

app_name = "audit"

urlpatterns = [
    path("", views.report, name="report"),
    path("export.csv", views.export, {"fmt": "csv"}, name="export-csv"),
    path("export.json", views.export, {"fmt": "json"}, name="export-json"),
]
