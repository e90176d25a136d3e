"""The one check of storable JSON (audit/limits.py), and the audit log's use of it."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import limits, services
from audit.actors import SYSTEM
from audit.evidence import canonical_json
from audit.models import AuditBody, AuditEntry


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, named",
    [
        ({"reply": {"score": float("nan")}}, "body.reply.score is NaN"),
        ({"ids": [1, 2**60]}, "body.ids[1] is an integer of 19 digits"),
        ({"text": "\ud800"}, "body.text holds an unpaired surrogate (U+D800)"),
        ({1: "x"}, "body has an object key that is not a string"),
    ],
)
def test_an_audit_body_it_cannot_hold_is_refused_naming_where(body, named):
    with pytest.raises(limits.Unstorable) as refused:
        services.record(action="test.hostile", body=body, actor=SYSTEM)
    assert str(refused.value).startswith(f"the audit entry test.hostile cannot be written: {named}")
    assert not AuditEntry.objects.filter(action="test.hostile").exists()


@pytest.mark.django_db
def test_an_audit_body_nested_5000_deep_is_refused_not_a_recursion_error():
    deep: list = []
    cursor = deep
    for _ in range(5000):
        cursor.append([])
        cursor = cursor[0]
    with pytest.raises(limits.Unstorable, match="body.tree.*is nested deeper than 64 levels"):
        services.record(action="test.deep", body={"tree": deep}, actor=SYSTEM)


@pytest.mark.django_db
@pytest.mark.postgres
def test_text_columns_of_an_entry_keep_what_they_can_of_a_nul_or_a_surrogate():
    entry = services.record(
        action="test.named",
        target_type="agents.tool",
        target_id="a\x00b",
        target_repr="x\ud800",
        actor=SYSTEM,
    )
    entry = AuditEntry.objects.get(pk=entry.pk)
    assert (entry.target_id, entry.target_repr) == ("a\ufffdb", "x\ufffd")


@pytest.mark.django_db
@pytest.mark.postgres
def test_a_nul_in_a_body_is_kept_exactly():
    entry = services.record(action="test.nul", body={"text": "a\x00b"}, actor=SYSTEM)
    assert AuditBody.objects.get(entry=entry).content == '{"text":"a\\u0000b"}'


def test_the_limits_are_declared_once_and_settings_override_them(settings):
    assert limits.limit("max_depth") == limits.DEFAULTS["max_depth"] == 64
    settings.STEWARD_LIMITS = {"max_depth": 3}
    assert limits.problem([[[1]]]) == ""
    assert limits.problem([[[[1]]]]) == "value[0][0][0] is nested deeper than 3 levels"
    assert limits.limits()["max_depth"] == 3


lone_surrogates = st.integers(0xD800, 0xDFFF).map(chr)
json_leaves = (
    st.none()
    | st.booleans()
    | st.text()
    | st.builds(str.__add__, st.text(max_size=5), lone_surrogates)
    | st.floats()
    | st.integers()
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_what_the_check_passes_the_audit_log_can_hold_and_clean_always_passes(value):
    why = limits.problem(value)
    if not why:
        text = canonical_json(value).decode("utf-8")
        assert "\x00" not in text  # jsonb and text columns could take it
    else:
        assert any(
            word in why
            for word in ("NUL", "surrogate", "NaN", "Infinity", "integer", "nested", "long")
        ), why
    cleaned = limits.clean(value)
    assert limits.problem(cleaned) == ""
    canonical_json(cleaned)


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers())
def test_numbers_pass_exactly_when_json_carries_them_exactly(number):
    exact = not isinstance(number, float) or math.isfinite(number)
    exact = exact and (isinstance(number, float) or abs(number) <= 2**53 - 1)
    assert (limits.problem(number) == "") is exact
