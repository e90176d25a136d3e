"""Governance's API routes, under /api/v1/."""

from django.urls import path

from governance.api import views

urlpatterns = [
    path("me", views.WhoAmIView.as_view(), name="api-me"),
]
