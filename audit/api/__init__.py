"""The audit trail's API: entries, proofs, checkpoints and evidence."""
