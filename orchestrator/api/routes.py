"""The orchestrator's API routes (workflows, versions, runs, signals), under /api/v1/.

Kept apart from orchestrator/api/urls.py, which is the root of every app's routes.
"""

from django.urls import path

from orchestrator.api import views

urlpatterns = [
    path("workflows", views.WorkflowListView.as_view(), name="api-workflows"),
    path("workflows/<slug:slug>", views.WorkflowDetailView.as_view(), name="api-workflow"),
    path(
        "workflows/<slug:slug>/versions",
        views.VersionListView.as_view(),
        name="api-workflow-versions",
    ),
    path(
        "workflows/<slug:slug>/versions/<int:number>",
        views.VersionDetailView.as_view(),
        name="api-workflow-version",
    ),
    path(
        "workflows/<slug:slug>/signals",
        views.WorkflowSignalView.as_view(),
        name="api-workflow-signals",
    ),
    path("runs", views.RunListView.as_view(), name="api-runs"),
    path("runs/<int:pk>", views.RunDetailView.as_view(), name="api-run"),
    path("runs/<int:pk>/events", views.RunEventsView.as_view(), name="api-run-events"),
    path("runs/<int:pk>/evidence", views.RunEvidenceView.as_view(), name="api-run-evidence"),
    path("runs/<int:pk>/cancel", views.RunCancelView.as_view(), name="api-run-cancel"),
    path("runs/<int:pk>/pause", views.RunPauseView.as_view(), name="api-run-pause"),
    path("runs/<int:pk>/resume", views.RunResumeView.as_view(), name="api-run-resume"),
    path(
        "runs/<int:pk>/steps/<int:step_pk>/retry",
        views.StepRetryView.as_view(),
        name="api-step-retry",
    ),
    path("runs/<int:pk>/signals", views.RunSignalView.as_view(), name="api-run-signals"),
]
