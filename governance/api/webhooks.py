"""The webhook subscriptions API: an integration manages its own subscriptions and deliveries.

Views stay thin: lists come from restrict(), single objects from the checked get_for() (404
for what the caller cannot see, 403 for what it sees but may not change), writes from the
webhook services, which audit them.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView, ListAPIView
from rest_framework.response import Response

from audit.api.pagination import CursorPagination
from audit.api.schema import problems
from governance import services
from governance.models import WebhookDelivery, WebhookEventType, WebhookSubscription
from governance.permissions import visible_people


class NewestFirst(CursorPagination):
    """Cursor pages, newest first."""

    ordering = ("-created_at", "-id")


class SubscriptionSerializer(serializers.ModelSerializer):
    """A subscription as its owner sees it: never the secret, which is shown only when created."""

    owner = serializers.CharField(source="owner.username", read_only=True)
    event_types = serializers.ListField(child=serializers.ChoiceField(WebhookEventType.choices))

    class Meta:
        model = WebhookSubscription
        fields = [
            "id",
            "owner",
            "url",
            "description",
            "event_types",
            "active",
            "disabled_reason",
            "consecutive_failures",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["disabled_reason", "consecutive_failures", "created_at", "updated_at"]


class SubscriptionCreateSerializer(serializers.Serializer):
    """What a new subscription needs; the owner defaults to the calling integration."""

    url = serializers.URLField(max_length=2000)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(WebhookEventType.choices), min_length=1
    )
    description = serializers.CharField(max_length=300, required=False, default="")
    owner = serializers.CharField(
        required=False, help_text="The integration's username (default: the caller)."
    )


class SubscriptionCreatedSerializer(SubscriptionSerializer):
    """A new subscription with its signing secret: copy it now, it is not shown again."""

    secret = serializers.CharField(read_only=True)

    class Meta(SubscriptionSerializer.Meta):
        fields = [*SubscriptionSerializer.Meta.fields, "secret"]


class SubscriptionUpdateSerializer(serializers.Serializer):
    """The fields of a subscription that change."""

    url = serializers.URLField(max_length=2000, required=False)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(WebhookEventType.choices), min_length=1, required=False
    )
    description = serializers.CharField(max_length=300, required=False)
    active = serializers.BooleanField(required=False)


class DeliverySerializer(serializers.ModelSerializer):
    """One outbox row: what was sent, how often, and what the receiver answered."""

    replay_of = serializers.CharField(source="replay_of.webhook_id", read_only=True, default=None)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "subscription",
            "event_type",
            "webhook_id",
            "payload",
            "status",
            "attempts",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "replay_of",
            "created_at",
            "delivered_at",
        ]
        read_only_fields = fields


def _subscriptions(user):
    """The subscriptions the caller may see."""
    return WebhookSubscription.objects.restrict(user, "view").select_related("owner")


class SubscriptionListView(ListAPIView):
    """List the caller's subscriptions, or subscribe to events."""

    pagination_class = NewestFirst
    serializer_class = SubscriptionSerializer

    def get_queryset(self):
        """The subscriptions the caller may see."""
        return _subscriptions(self.request.user)

    @extend_schema(
        summary="List webhook subscriptions",
        responses={200: SubscriptionSerializer(many=True), **problems()},
    )
    def get(self, request):
        """Return a page of the subscriptions the caller may see."""
        return self.list(request)

    @extend_schema(
        summary="Subscribe to events",
        request=SubscriptionCreateSerializer,
        responses={201: SubscriptionCreatedSerializer, **problems(400, 403, 404, 422)},
    )
    def post(self, request):
        """Create a subscription (its destination is checked) and return it with its secret."""
        given = SubscriptionCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        owner = request.user
        if data.get("owner") and data["owner"] != request.user.get_username():
            owner = _person(request.user, data["owner"])
        subscription, secret = services.create_subscription(
            owner=owner,
            url=data["url"],
            event_types=data["event_types"],
            description=data["description"],
            actor=request.user,
        )
        subscription.secret = secret
        return Response(
            SubscriptionCreatedSerializer(subscription).data, status=status.HTTP_201_CREATED
        )


def _person(user, username: str):
    """Return the visible user a username names; 404 (audited) for one the caller cannot see."""
    people = visible_people(user)
    found = people.filter(username=username).first()
    if found is None:
        refusal = services.NotVisible(user, "view", get_user_model(), username)
        refusal.audit()
        raise refusal
    return found


class SubscriptionDetailView(GenericAPIView):
    """Read, change or delete one subscription."""

    queryset = WebhookSubscription.objects.none()  # for the schema; reads go through get_for()
    serializer_class = SubscriptionSerializer

    def _get(self, request, pk):
        """The subscription, if the caller may see it (404 otherwise, audited)."""
        return services.get_for(request.user, _subscriptions(request.user), pk, "view")

    @extend_schema(
        summary="One webhook subscription",
        responses={200: SubscriptionSerializer, **problems(404)},
    )
    def get(self, request, pk: int):
        """Return one subscription."""
        return Response(SubscriptionSerializer(self._get(request, pk)).data)

    @extend_schema(
        summary="Change a webhook subscription",
        request=SubscriptionUpdateSerializer,
        responses={200: SubscriptionSerializer, **problems(400, 403, 404, 422)},
    )
    def patch(self, request, pk: int):
        """Change the URL, event types, description or active flag (re-activating resets)."""
        subscription = self._get(request, pk)
        given = SubscriptionUpdateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        changed = services.update_subscription(
            subscription, actor=request.user, **given.validated_data
        )
        return Response(SubscriptionSerializer(changed).data)

    @extend_schema(
        summary="Delete a webhook subscription", responses={204: None, **problems(403, 404)}
    )
    def delete(self, request, pk: int):
        """Delete the subscription and its outbox rows."""
        services.delete_subscription(self._get(request, pk), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SubscriptionDeliveriesView(ListAPIView):
    """The deliveries of one subscription, newest first."""

    queryset = WebhookDelivery.objects.none()  # for the schema; reads go through get_for()
    pagination_class = NewestFirst
    serializer_class = DeliverySerializer

    def get_queryset(self):
        """The deliveries of the subscription, found through the checked get_for() (404)."""
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        pk = self.kwargs["pk"]
        subscription = services.get_for(self.request.user, _subscriptions(self.request.user), pk)
        return subscription.deliveries.select_related("replay_of")

    @extend_schema(
        summary="Deliveries of a subscription",
        responses={200: DeliverySerializer(many=True), **problems(404)},
    )
    def get(self, request, pk: int):
        """Return a page of the subscription's deliveries and their outcomes."""
        return self.list(request)


class DeliveryReplayView(GenericAPIView):
    """Send a delivery's payload again."""

    queryset = WebhookDelivery.objects.none()  # for the schema; reads go through get_for()
    serializer_class = DeliverySerializer

    @extend_schema(
        summary="Replay a delivery",
        request=None,
        responses={202: DeliverySerializer, **problems(403, 404, 422)},
    )
    def post(self, request, pk: int):
        """Queue a new delivery of the same payload (a new `webhook-id`); return it."""
        visible = WebhookDelivery.objects.restrict(request.user, "view").select_related(
            "subscription", "replay_of"
        )
        delivery = services.get_for(request.user, visible, pk, "view")
        replay = services.replay_delivery(delivery, actor=request.user)
        return Response(DeliverySerializer(replay).data, status=status.HTTP_202_ACCEPTED)
