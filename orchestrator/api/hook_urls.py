"""Inbound webhook routes, under /api/v1/hooks/."""

from django.urls import path

from orchestrator.api.hooks import InboundHookView

urlpatterns = [
    path("<slug:slug>/", InboundHookView.as_view(), name="api-inbound-hook"),
]
