"""The approvals inbox's pages, mounted at /inbox/."""

from django.urls import path

from governance.views import inbox

app_name = "inbox"

urlpatterns = [
    path("", inbox.index, name="index"),
    path("count/", inbox.count, name="count"),
    path("bulk/", inbox.bulk_approve, name="bulk"),
    path("<int:pk>/", inbox.detail, name="request"),
    path("<int:pk>/row/", inbox.row, name="row"),
    path("<int:pk>/decide/", inbox.decide, name="decide"),
    path("escalations/<int:pk>/", inbox.escalation_detail, name="escalation"),
    path("escalations/<int:pk>/row/", inbox.escalation_row, name="escalation-row"),
    path("escalations/<int:pk>/resolve/", inbox.resolve, name="resolve"),
]
