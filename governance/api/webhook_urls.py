"""The webhook subscriptions API's routes, under /api/v1/webhooks/."""

from django.urls import path

from governance.api import webhooks

urlpatterns = [
    path(
        "subscriptions", webhooks.SubscriptionListView.as_view(), name="api-webhook-subscriptions"
    ),
    path(
        "subscriptions/<int:pk>",
        webhooks.SubscriptionDetailView.as_view(),
        name="api-webhook-subscription",
    ),
    path(
        "subscriptions/<int:pk>/deliveries",
        webhooks.SubscriptionDeliveriesView.as_view(),
        name="api-webhook-subscription-deliveries",
    ),
    path(
        "deliveries/<int:pk>/replay",
        webhooks.DeliveryReplayView.as_view(),
        name="api-webhook-delivery-replay",
    ),
]
