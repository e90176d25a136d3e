"""The agents app's API routes, under /api/v1/."""

from django.urls import path

from agents.api import views

urlpatterns = [
    path("agents", views.AgentListView.as_view(), name="api-agents"),
    path("agents/<int:pk>", views.AgentDetailView.as_view(), name="api-agent"),
    path("agents/<int:pk>/suspend", views.suspend, name="api-agent-suspend"),
    path("agents/<int:pk>/quarantine", views.quarantine, name="api-agent-quarantine"),
    path("agents/<int:pk>/reactivate", views.reactivate, name="api-agent-reactivate"),
    path("tools", views.ToolListView.as_view(), name="api-tools"),
    path("tools/<int:pk>", views.ToolDetailView.as_view(), name="api-tool"),
    path("tool-invocations", views.ToolInvocationListView.as_view(), name="api-tool-invocations"),
    path(
        "tool-invocations/<int:pk>",
        views.ToolInvocationDetailView.as_view(),
        name="api-tool-invocation",
    ),
    path("model-calls", views.ModelCallListView.as_view(), name="api-model-calls"),
    path("model-calls/<int:pk>", views.ModelCallDetailView.as_view(), name="api-model-call"),
]
