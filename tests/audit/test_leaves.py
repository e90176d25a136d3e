"""The fast leaf encoders agree byte for byte with the reference canonical_json."""

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from audit.evidence import canonical_json
from audit.leaves import entry_leaf_hash, fast_leaf_hash, format_time, sequencing_leaf_hash

text = st.text(max_size=30)
decisions = st.none() | st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


@given(
    seq=st.integers(0, 2**40),
    entry_id=st.integers(1, 2**50),
    actor_id=st.none() | st.integers(1, 2**40),
    strings=st.lists(text, min_size=10, max_size=10),
    decision=decisions,
    when=st.datetimes(timezones=st.just(UTC)),
)
def test_fast_leaf_hash_matches_the_reference(seq, entry_id, actor_id, strings, decision, when):
    decision_text = canonical_json(decision).decode() if decision is not None else None
    row = (entry_id, format_time(when), actor_id, *strings[:9], decision_text, strings[9])
    assert fast_leaf_hash(seq, row) == entry_leaf_hash(seq, row)


@given(
    seq=st.integers(0, 2**40),
    strings=st.lists(text, min_size=10, max_size=10),
    decision=decisions,
    indent=st.none() | st.integers(0, 2),
    sort_keys=st.booleans(),
    ensure_ascii=st.booleans(),
)
def test_the_sequencers_leaf_hash_matches_the_reference_for_any_decision_text(
    seq, strings, decision, indent, sort_keys, ensure_ascii
):
    # Decision text as any JSON writer might have stored it, not only canonically.
    decision_text = (
        json.dumps(decision, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii)
        if decision is not None
        else None
    )
    row = (7, "2025-01-02T03:04:05.000006Z", None, *strings[:9], decision_text, strings[9])
    assert sequencing_leaf_hash(seq, row) == entry_leaf_hash(seq, row)


def test_format_time_is_utc_with_microseconds():
    assert format_time(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2025-01-02T03:04:05.000000Z"
    assert format_time("2025-01-02 03:04:05.5") == "2025-01-02T03:04:05.500000Z"
    assert format_time("2025-01-02T03:04:05.000007Z") == "2025-01-02T03:04:05.000007Z"
