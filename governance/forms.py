"""Governance's web forms: what a person submits from the inbox."""

from __future__ import annotations

from django import forms

from governance.models import DecisionKind


class DecisionForm(forms.Form):
    """One decision on one request, bound to the digest of the arguments the person was shown.

    Whether a reason is needed is the decision service's rule (ReasonRequired); the inbox shows
    its refusal on the reason field.
    """

    decision = forms.ChoiceField(choices=DecisionKind.choices)
    comment = forms.CharField(
        required=False,
        max_length=4000,
        label="Reason",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Why (required to reject)"}),
    )
    expected_digest = forms.CharField(widget=forms.HiddenInput, max_length=64)
    back = forms.CharField(widget=forms.HiddenInput, required=False, max_length=2000)
