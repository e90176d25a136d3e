"""The report filter form: parses a query string into an AuditFilter."""

from django import forms

from audit.models import ActorKind
from audit.queries import AuditFilter


class AuditReportForm(forms.Form):
    """Filters of the audit report page and its exports."""

    actor = forms.CharField(required=False, help_text="Username or user id.")
    actor_kind = forms.ChoiceField(required=False, choices=[("", "any")] + list(ActorKind.choices))
    agent = forms.CharField(required=False, help_text="Agent name.")
    action = forms.CharField(required=False, help_text="Exact, or a prefix ending in *.")
    target_type = forms.CharField(required=False, help_text="app_label.model")
    target_id = forms.CharField(required=False)
    run_id = forms.CharField(required=False)
    request_id = forms.CharField(required=False)
    since = forms.DateTimeField(required=False)
    until = forms.DateTimeField(required=False)

    def to_filter(self) -> AuditFilter:
        """Return the filter the valid form describes (call is_valid() first)."""
        data = self.cleaned_data
        return AuditFilter(
            **{
                name: data.get(name) or ("" if name not in {"since", "until"} else None)
                for name in AuditFilter.__dataclass_fields__
            }
        )
