"""URLs of the run inspector (under /runs/)."""

from django.urls import path

from orchestrator.views import runs

app_name = "runs"

urlpatterns = [
    path("", runs.run_list, name="list"),
    path("views/", runs.save_view, name="save-view"),
    path("views/<int:pk>/delete/", runs.delete_view, name="delete-view"),
    path("<int:pk>/", runs.run_detail, name="detail"),
    path("<int:pk>/row/", runs.run_row, name="row"),
    path("<int:pk>/header/", runs.run_header, name="header"),
    path("<int:pk>/graph/", runs.run_graph, name="graph"),
    path("<int:pk>/steps/", runs.run_steps, name="steps"),
    path("<int:pk>/steps/<int:step_pk>/", runs.step_detail, name="step"),
    path("<int:pk>/steps/<int:step_pk>/retry/", runs.retry_step, name="retry"),
    path("<int:pk>/events/", runs.run_events, name="events"),
    path("<int:pk>/events/<int:event_pk>/", runs.run_event, name="event"),
    path("<int:pk>/model-calls/<int:call_pk>/", runs.model_call, name="model-call"),
    path("<int:pk>/<str:action>/", runs.run_action, name="action"),
]
