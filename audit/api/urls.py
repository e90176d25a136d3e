"""The audit trail's API routes, under /api/v1/audit/."""

from django.urls import path

from audit.api import views

urlpatterns = [
    path("audit/entries", views.EntryListView.as_view(), name="api-audit-entries"),
    path("audit/entries/<int:pk>", views.EntryDetailView.as_view(), name="api-audit-entry"),
    path(
        "audit/checkpoints/latest",
        views.LatestCheckpointView.as_view(),
        name="api-audit-checkpoint-latest",
    ),
    path(
        "audit/checkpoints/<int:pk>",
        views.CheckpointDetailView.as_view(),
        name="api-audit-checkpoint",
    ),
    path("audit/consistency", views.ConsistencyView.as_view(), name="api-audit-consistency"),
    path("audit/evidence", views.EvidenceView.as_view(), name="api-audit-evidence"),
]
