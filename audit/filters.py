"""The one filterset of audit entries: the report page, its exports, audit_export and the API."""

from __future__ import annotations

import datetime

import django_filters
from django import forms
from django.db.models import Q
from django_filters.fields import IsoDateTimeField

from audit.models import ActorKind, AuditEntry

# The largest value a PostgreSQL bigint holds: a larger sequence number matches nothing, and
# asking the database for it would be an error rather than an empty answer.
MAX_SEQ = 2**63 - 1


def in_utc(value: datetime.datetime | None) -> datetime.datetime | None:
    """Return an aware time in UTC, or refuse (invalid input) one no UTC time can hold.

    Python takes UTC offsets up to ±23:59, PostgreSQL only up to ±15:59, so a time is sent to
    the database in UTC; 0001-01-01T00:00+01:00 has no UTC time at all.
    """
    if value is None:
        return None
    try:
        return value.astimezone(datetime.UTC)
    except OverflowError:
        raise forms.ValidationError("This time is out of range.", code="out_of_range") from None


class UtcDateTimeField(forms.DateTimeField):
    """A date and time (with or without its offset), in UTC."""

    def to_python(self, value):
        """Parse the value and convert it to UTC."""
        return in_utc(super().to_python(value))


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date and time, in UTC."""

    def to_python(self, value):
        """Parse the value and convert it to UTC."""
        return in_utc(super().to_python(value))


class DateTimeFilter(django_filters.DateTimeFilter):
    """A filter on a time, the value sent to the database in UTC (every app's filtersets)."""

    field_class = UtcDateTimeField


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """A filter on an ISO 8601 time, the value sent to the database in UTC."""

    field_class = UtcIsoDateTimeField


class AuditEntryFilter(django_filters.FilterSet):
    """What a reader of the trail may ask for; an empty field does not filter."""

    actor = django_filters.CharFilter(
        method="filter_actor", label="Actor", help_text="Username or user id."
    )
    actor_kind = django_filters.ChoiceFilter(
        choices=ActorKind.choices, empty_label="any", label="Actor kind"
    )
    agent = django_filters.CharFilter(method="filter_agent", label="Agent", help_text="Agent name.")
    action = django_filters.CharFilter(
        method="filter_action", label="Action", help_text="Exact, or a prefix ending in *."
    )
    target_type = django_filters.CharFilter(label="Target type", help_text="app_label.model")
    target_id = django_filters.CharFilter(label="Target id")
    run_id = django_filters.CharFilter(label="Run id")
    request_id = django_filters.CharFilter(label="Request id")
    since = DateTimeFilter(
        field_name="created_at", lookup_expr="gte", label="Since", help_text="Created at or after."
    )
    until = DateTimeFilter(
        field_name="created_at", lookup_expr="lt", label="Until", help_text="Created before."
    )
    seq_min = django_filters.NumberFilter(
        field_name="leaf__seq",
        lookup_expr="gte",
        label="Seq from",
        help_text="Sequence number at least this (resume a tail after the last seq seen + 1).",
        min_value=0,
        max_value=MAX_SEQ,
        widget=forms.NumberInput,
    )
    seq_max = django_filters.NumberFilter(
        field_name="leaf__seq",
        lookup_expr="lte",
        label="Seq to",
        help_text="Sequence number at most this.",
        min_value=0,
        max_value=MAX_SEQ,
        widget=forms.NumberInput,
    )

    class Meta:
        model = AuditEntry
        fields: list[str] = []

    def filter_actor(self, queryset, name, value):
        """Match the actor's copied name, or its id when the value is a number."""
        actor = value.strip()
        match = Q(actor_name=actor)
        if actor.isdigit() and int(actor) <= MAX_SEQ:
            match |= Q(actor_id=int(actor))
        return queryset.filter(match)

    def filter_agent(self, queryset, name, value):
        """Match entries an agent of that name wrote."""
        return queryset.filter(actor_kind=ActorKind.AGENT, actor_name=value)

    def filter_action(self, queryset, name, value):
        """Match an exact action, or every action under a prefix ending in `*`."""
        action = value.strip()
        if action.endswith("*"):
            return queryset.filter(action__startswith=action[:-1])
        return queryset.filter(action=action)
