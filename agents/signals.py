"""Signals the agents app sends, so the engine above it can follow without being imported."""

from django.dispatch import Signal

# Sent inside the memory purge's transaction, with `model_calls`: {audit entry id: run id} of the
# model calls whose prompt or response held a value whose retention passed (their audit bodies
# are erased by then). The engine's journal of each such call (its result names the audit entry
# as `audit_entry`) holds the model's response too. A receiver redacts the journals of finished
# steps and returns {"redacted": {audit entry id: rows redacted}, "kept": [audit entry ids whose
# step is unfinished]}; the purge tries the kept ones again on a later run.
model_call_values_expired = Signal()
