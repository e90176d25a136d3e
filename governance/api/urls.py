"""Governance's API routes, under /api/v1/."""

from django.urls import path

from governance.api import views

urlpatterns = [
    path("me", views.WhoAmIView.as_view(), name="api-me"),
    path("approvals", views.ApprovalListView.as_view(), name="api-approvals"),
    path("approvals/<int:pk>", views.ApprovalDetailView.as_view(), name="api-approval"),
    path(
        "approvals/<int:pk>/decision",
        views.ApprovalDecisionView.as_view(),
        name="api-approval-decision",
    ),
    path("escalations", views.EscalationListView.as_view(), name="api-escalations"),
    path("escalations/<int:pk>", views.EscalationDetailView.as_view(), name="api-escalation"),
    path(
        "escalations/<int:pk>/resolution",
        views.EscalationResolutionView.as_view(),
        name="api-escalation-resolution",
    ),
]
