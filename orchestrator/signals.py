"""Signals the engine sends, so higher layers (audit, live UI) can follow without being imported."""

from django.dispatch import Signal

# Sent inside the transaction that wrote the events, with `events`: a list of saved RunEvent rows.
# A receiver that writes (the audit log) commits or rolls back together with the state change.
run_events_recorded = Signal()
