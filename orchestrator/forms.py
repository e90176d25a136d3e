"""Forms for workflow operations in the admin; they validate input and call the services."""

from __future__ import annotations

import json

from django import forms

from orchestrator.definitions import DefinitionError, load_definition, validate_definition
from orchestrator.models import Workflow, WorkflowVersion


class JSONObjectField(forms.CharField):
    """A text field that must hold a JSON object."""

    widget = forms.Textarea(attrs={"rows": 6, "cols": 80, "class": "vLargeTextField"})

    def to_python(self, value):
        """Parse the text as a JSON object ({} when empty)."""
        text = (super().to_python(value) or "").strip()
        if not text:
            return {}
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise forms.ValidationError('Must be a JSON object, e.g. {"key": "value"}.')
        return parsed


class PublishVersionForm(forms.ModelForm):
    """Publish a workflow definition (JSON or YAML) as a new immutable version."""

    definition_text = forms.CharField(
        label="Definition",
        widget=forms.Textarea(attrs={"rows": 24, "cols": 100, "style": "font-family: monospace"}),
        help_text="JSON or YAML; see docs/workflows.md. It is validated before it is published.",
    )

    class Meta:
        model = WorkflowVersion
        fields = ["workflow", "note"]

    def clean_definition_text(self):
        """Parse and validate the definition; every problem names its step and field."""
        try:
            definition = load_definition(self.cleaned_data["definition_text"])
        except DefinitionError as exc:
            raise forms.ValidationError([str(p) for p in exc.problems]) from exc
        problems = validate_definition(definition)
        if problems:
            raise forms.ValidationError([str(p) for p in problems])
        return definition


class StartRunForm(forms.Form):
    """Start a run of a workflow."""

    input = JSONObjectField(required=False, help_text="The run input, a JSON object.")
    business_key = forms.CharField(required=False, max_length=200)
    idempotency_key = forms.CharField(
        required=False,
        max_length=200,
        help_text="Starting again with the same key returns the existing run.",
    )


class SendSignalForm(forms.Form):
    """Send a named signal to a run."""

    name = forms.CharField(max_length=200)
    payload = JSONObjectField(required=False)


class WorkflowForm(forms.ModelForm):
    """Edit a workflow's name and description (behaviour changes by publishing a version)."""

    class Meta:
        model = Workflow
        fields = ["slug", "name", "description", "is_active"]


# --- the run inspector's confirmations ---------------------------------------------------------


class RunActionForm(forms.Form):
    """Confirm pausing, resuming or retrying (nothing to fill in but the confirmation)."""

    confirm = forms.BooleanField(required=True, initial=True, widget=forms.HiddenInput)


class CancelRunForm(RunActionForm):
    """Confirm cancelling a run, with the reason that goes into its history."""

    reason = forms.CharField(max_length=500, required=True, label="Reason")


class SignalRunForm(RunActionForm):
    """Confirm sending a named signal with its JSON payload to a run."""

    name = forms.SlugField(max_length=200, label="Signal name")
    payload = JSONObjectField(required=False, label="Payload (JSON object)")


class SavedViewForm(forms.Form):
    """Name the runs list's current filter to open it again."""

    name = forms.CharField(max_length=100, label="Name this view")
    query = forms.CharField(max_length=2000, required=False, widget=forms.HiddenInput)
