"""Governance's web forms: what a person submits from the inbox."""

from __future__ import annotations

from django import forms

from governance.models import DecisionKind

NEEDS_REASON = {DecisionKind.REJECT, DecisionKind.REQUEST_CHANGES}


class DecisionForm(forms.Form):
    """One decision on one request, bound to the digest of the arguments the person was shown."""

    decision = forms.ChoiceField(choices=DecisionKind.choices)
    comment = forms.CharField(
        required=False,
        max_length=4000,
        label="Reason",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Why (required to reject)"}),
    )
    expected_digest = forms.CharField(widget=forms.HiddenInput, max_length=64)
    back = forms.CharField(widget=forms.HiddenInput, required=False, max_length=2000)

    def clean(self):
        """Refuse a rejection or a request for changes without its reason."""
        cleaned = super().clean()
        if cleaned.get("decision") in NEEDS_REASON and not cleaned.get("comment", "").strip():
            verb = "reject" if cleaned["decision"] == DecisionKind.REJECT else "ask for changes"
            self.add_error("comment", f"Say why you {verb}: the requester and the audit read it.")
        return cleaned
