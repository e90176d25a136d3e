"""Build the POST data of an admin change form from the page itself (as a browser would)."""

from __future__ import annotations

import datetime as dt

from django.forms.widgets import CheckboxInput, SplitDateTimeWidget


def _put(data: dict, form, name: str) -> None:
    """Add one bound field's current value under its prefixed name."""
    field = form.fields[name]
    value = form[name].value()
    key = form.add_prefix(name)
    if isinstance(field.widget, SplitDateTimeWidget):
        if isinstance(value, dt.datetime):
            data[f"{key}_0"], data[f"{key}_1"] = (
                value.date().isoformat(),
                value.strftime("%H:%M:%S"),
            )
        elif isinstance(value, list | tuple):
            data[f"{key}_0"], data[f"{key}_1"] = value[0], value[1]
        return
    if isinstance(field.widget, CheckboxInput):
        if value:
            data[key] = "on"
        return
    if value is None:
        return
    if isinstance(value, list | tuple):
        data[key] = [str(getattr(item, "pk", item)) for item in value]
    else:
        data[key] = str(getattr(value, "pk", value))


def change_form_data(response) -> dict:
    """Return what submitting an admin change page unchanged would POST."""
    data: dict = {}
    form = response.context["adminform"].form
    for name in form.fields:
        _put(data, form, name)
    for inline in response.context.get("inline_admin_formsets", []):
        formset = inline.formset
        management = formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = str(management[name].value())
        for subform in formset.forms:
            for name in subform.fields:
                _put(data, subform, name)
    return data
