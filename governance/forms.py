"""Governance's web forms: what a person submits from the inbox."""

from __future__ import annotations

from django import forms

from governance.models import DecisionKind, Resolution


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


class ResolutionForm(forms.Form):
    """One person's resolution of one escalation: take over with a result, retry, or stop.

    Whether a take-over has its result is the resolution service's rule (it refuses one
    without); the form only reads the JSON.
    """

    resolution = forms.ChoiceField(choices=Resolution.choices)
    result = forms.JSONField(
        required=False,
        label="Result",
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text="To take over: the step's output, as JSON.",
    )
    comment = forms.CharField(
        required=False,
        max_length=4000,
        label="Comment",
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Why (kept with the resolution)"}),
    )
    back = forms.CharField(widget=forms.HiddenInput, required=False, max_length=2000)


class BulkApproveForm(forms.Form):
    """Approve several requests of one class at once: each id with the digest the person saw.

    `items` are "<id>:<digest>" pairs (one checkbox each); the bulk service decides each on its
    own digest and refuses the batch unless every request is of the same low-risk class.
    """

    items = forms.MultipleChoiceField(choices=(), widget=forms.CheckboxSelectMultiple)
    back = forms.CharField(widget=forms.HiddenInput, required=False, max_length=2000)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The pairs are checked by the service, not against a list of choices.
        self.fields["items"].valid_value = lambda value: True

    def clean_items(self) -> list[tuple[int, str]]:
        """Return the (id, digest) pairs, refusing any that is not one."""
        pairs = []
        for raw in self.cleaned_data["items"]:
            pk, _, digest = str(raw).partition(":")
            if not pk.isdigit() or len(digest) != 64:
                raise forms.ValidationError(f"Not a request and its digest: {raw!r}.")
            pairs.append((int(pk), digest))
        if len(pairs) > 100:
            raise forms.ValidationError("Approve at most 100 requests at once.")
        return pairs
