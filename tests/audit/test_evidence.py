"""Evidence bundles: RFC 8785 canonical JSON, signed checkpoints, tampering named exactly.

Pure Python: no database, no Django. The canonical JSON vectors are RFC 8785's own (3.2.2
example, 3.2.3 sorting example, Appendix B numbers).
"""

from __future__ import annotations

import base64
import copy
import enum
import hashlib
import json
import struct
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import evidence
from audit.evidence import (
    BUNDLE_FORMAT,
    body_digest,
    canonical_json,
    checkpoint_message,
    format_number,
    key_id_for,
    load_bundle,
    sign_checkpoint,
    verify_bundle,
    verify_checkpoint_signature,
)
from audit.merkle import MerkleTree, leaf_hash

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "verify_evidence.py"
TREE_SIZE = 20
TIMESTAMP = "2026-11-24T13:17:45.123456Z"


def raw_public_key(private_key: Ed25519PrivateKey) -> bytes:
    """Return the 32 raw bytes of a private key's public half."""
    return private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def make_bundle(
    private_key: Ed25519PrivateKey,
    chosen: tuple[int, ...] = (0, 5, 17),
    erased: tuple[int, ...] = (),
    size: int = TREE_SIZE,
) -> dict:
    """Return a valid bundle for entries `chosen` of a log of `size` entries, some erased."""
    bodies, leaves = [], []
    for seq in range(size):
        body = {"prompt": f"step {seq}: summarise the report", "tokens": seq * 10, "ok": True}
        bodies.append(body)
        leaves.append(
            {
                "v": 1,
                "seq": seq,
                "entry_id": 1000 + seq,
                "time": f"2026-11-24T13:00:{seq:02d}.000000Z",
                "actor_name": "agent-007",
                "action": "agent.tool_called",
                "decision": {"outcome": "allow", "policy": "default"} if seq % 2 else None,
                "body_digest": body_digest(body),
            }
        )
    tree = MerkleTree([leaf_hash(canonical_json(leaf)) for leaf in leaves])
    public = raw_public_key(private_key)
    key_id = key_id_for(public)
    root_hex = tree.root().hex()
    signature = sign_checkpoint(private_key, checkpoint_message(size, root_hex, TIMESTAMP, key_id))
    return {
        "format": BUNDLE_FORMAT,
        "public_key": base64.b64encode(public).decode(),
        "checkpoint": {
            "tree_size": size,
            "root_hash": root_hex,
            "timestamp": TIMESTAMP,
            "key_id": key_id,
            "signature": base64.b64encode(signature).decode(),
        },
        "entries": [
            {
                "seq": seq,
                "leaf": leaves[seq],
                "body": None if seq in erased else bodies[seq],
                "inclusion_proof": [node.hex() for node in tree.inclusion_proof(seq)],
            }
            for seq in chosen
        ],
    }


@pytest.fixture(scope="module")
def private_key() -> Ed25519PrivateKey:
    """A signing key made for these tests."""
    return Ed25519PrivateKey.generate()


@pytest.fixture
def bundle(private_key) -> dict:
    """A valid bundle of entries 0, 5 and 17 of a 20-entry log."""
    return make_bundle(private_key)


def entry(bundle: dict, seq: int) -> dict:
    """Return the bundle's entry for `seq`."""
    return next(item for item in bundle["entries"] if item["seq"] == seq)


def flip_hex(text: str) -> str:
    """Return hex text with its first digit changed."""
    return ("1" if text[0] == "0" else "0") + text[1:]


def all_entries_fail_their_proof(bundle: dict) -> list[str]:
    """Return the problem every entry of the bundle reports when the root is wrong."""
    size = bundle["checkpoint"]["tree_size"]
    return [
        f"entry seq={item['seq']}: leaf does not match its inclusion proof "
        f"for checkpoint size {size}"
        for item in bundle["entries"]
    ]


# --- canonical JSON -----------------------------------------------------------------------


def test_canonical_json_rfc8785_example():
    # RFC 8785 3.2.2: numbers, escapes and literals, with members reordered.
    source = (
        '{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],'
        '"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        '"literals":[null,true,false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    ).encode()
    assert canonical_json(json.loads(source)) == expected


def test_canonical_json_sorts_keys_by_utf16_code_units():
    # RFC 8785 3.2.3: U+1F600 sorts by its leading surrogate D83D, so before U+FB33.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    expected = (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    )
    assert canonical_json(value) == expected.encode()


# RFC 8785 Appendix B: IEEE 754 binary64 bit patterns and their canonical text.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


def double(bits: str) -> float:
    """Return the float with these IEEE 754 bits."""
    return struct.unpack(">d", bytes.fromhex(bits))[0]


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B)
def test_numbers_follow_rfc8785_appendix_b(bits, expected):
    value = double(bits)
    assert format_number(value) == expected
    assert canonical_json([value]) == f"[{expected}]".encode()


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_nan_and_infinity_are_refused(bits):
    with pytest.raises(ValueError):
        canonical_json({"x": double(bits)})


def test_an_integral_float_reads_back_as_an_int_that_writes_the_same():
    # Python reads canonical "48964834474015350" back as an int beyond 2**53: still the same.
    for value in (4.896483447401535e16, double("4430000000000000"), -(2.0**60)):
        text = canonical_json([value])
        assert canonical_json(json.loads(text)) == text
        assert isinstance(json.loads(text)[0], int)


def test_integral_floats_and_ints_write_alike():
    assert canonical_json({"a": 3.0, "b": 3, "c": -0.0, "d": 1e-7, "e": 0.5}) == (
        b'{"a":3,"b":3,"c":0,"d":1e-7,"e":0.5}'
    )


def test_what_rfc8785_cannot_carry_is_refused():
    with pytest.raises(ValueError, match="would write 9007199254740992"):
        canonical_json({"id": 2**53 + 1})
    with pytest.raises(ValueError, match="would write -1152921504606847000"):
        canonical_json([-(2**60)])
    with pytest.raises(ValueError, match="would write 1e\\+21"):
        canonical_json([10**21])
    with pytest.raises(ValueError, match="would write infinity"):
        canonical_json([10**400])
    assert canonical_json([2**53, -(2**53)]) == b"[9007199254740992,-9007199254740992]"
    with pytest.raises(TypeError, match="keys are strings"):
        canonical_json({1: "one"})
    with pytest.raises(TypeError, match="bytes"):
        canonical_json({"raw": b"\x00"})
    with pytest.raises(TypeError, match="set"):
        canonical_json([{1, 2}])
    with pytest.raises(ValueError, match="surrogate"):
        canonical_json({"text": "\ud800"})
    with pytest.raises(ValueError, match="surrogate"):
        canonical_json({"\ud800": 1.5})


def test_subclasses_write_as_their_base_type():
    class Kind(enum.StrEnum):
        AGENT = "agent"

    class Level(enum.IntEnum):
        HIGH = 3

    value = OrderedDict([("b", Kind.AGENT), ("a", (Level.HIGH, 1.5))])
    assert canonical_json(value) == b'{"a":[3,1.5],"b":"agent"}'
    assert canonical_json({"b": Kind.AGENT, "a": [Level.HIGH]}) == b'{"a":[3],"b":"agent"}'


def test_strings_are_utf8_with_only_the_required_escapes():
    value = {"s": "caf\u00e9 \u2028 \x7f \x00 \x1f \t \U0001f600 </script>"}
    assert canonical_json(value) == (
        '{"s":"caf\u00e9 \u2028 \x7f \\u0000 \\u001f \\t \U0001f600 </script>"}'.encode()
    )


JSON_SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1) | st.text()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_canonical_json_survives_a_trip_through_json_text(value):
    text = canonical_json(value)
    parsed = json.loads(text)
    assert canonical_json(parsed) == text
    assert body_digest(parsed) == hashlib.sha256(text).hexdigest()


@settings(max_examples=150, deadline=None)
@given(
    st.recursive(
        JSON_SCALARS,
        lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children),
        max_leaves=25,
    )
)
def test_the_fast_path_writes_what_the_rfc8785_writer_writes(value):
    parts: list[str] = []
    evidence._write_rfc8785(value, parts)
    assert canonical_json(value) == "".join(parts).encode()


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_float_is_written_so_that_it_reads_back_exactly(value):
    text = format_number(value)
    assert float(text) == value
    assert canonical_json(json.loads(text)) == text.encode()
    # ECMAScript switches to an exponent below 1e-6 and from 1e21 on.
    uses_exponent = value != 0 and not 1e-6 <= abs(value) < 1e21
    assert ("e" in text) == uses_exponent


def test_body_digest_is_the_sha256_of_the_canonical_json():
    body = {"b": [1, 2], "a": "x"}
    assert body_digest(body) == hashlib.sha256(b'{"a":"x","b":[1,2]}').hexdigest()


def test_load_bundle_refuses_duplicate_keys_and_constants():
    with pytest.raises(ValueError, match="duplicate key 'a'"):
        load_bundle('{"a": 1, "a": 2}')
    with pytest.raises(ValueError, match="NaN"):
        load_bundle('{"a": NaN}')
    assert load_bundle(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_message_layout():
    root = bytes(range(32))
    message = checkpoint_message(120, root, TIMESTAMP, "0123456789abcdef")
    assert message == (
        b"steward-checkpoint/1\n0123456789abcdef\n120\n" + root.hex().encode() + b"\n"
        b"2026-11-24T13:17:45.123456Z\n"
    )
    assert checkpoint_message(120, root.hex(), TIMESTAMP, "0123456789abcdef") == message


@pytest.mark.parametrize(
    ("size", "root", "timestamp", "key_id"),
    [
        (-1, bytes(32), TIMESTAMP, "k"),
        (True, bytes(32), TIMESTAMP, "k"),
        ("5", bytes(32), TIMESTAMP, "k"),
        (5, bytes(31), TIMESTAMP, "k"),
        (5, "AB" * 32, TIMESTAMP, "k"),
        (5, "ab" * 31, TIMESTAMP, "k"),
        (5, bytes(32), "2026-11-24\n120", "k"),
        (5, bytes(32), TIMESTAMP, "k\n1"),
        (5, bytes(32), TIMESTAMP, ""),
    ],
)
def test_checkpoint_message_refuses_ambiguous_fields(size, root, timestamp, key_id):
    with pytest.raises(ValueError):
        checkpoint_message(size, root, timestamp, key_id)


def test_key_id_is_the_start_of_the_public_keys_sha256(private_key):
    public = raw_public_key(private_key)
    assert key_id_for(public) == hashlib.sha256(public).hexdigest()[:16]


def test_signatures_verify_only_for_the_same_key_and_message(private_key):
    public = raw_public_key(private_key)
    message = checkpoint_message(7, bytes(32), TIMESTAMP, key_id_for(public))
    signature = sign_checkpoint(private_key, message)
    assert len(signature) == 64
    assert verify_checkpoint_signature(public, message, signature)
    other_message = checkpoint_message(8, bytes(32), TIMESTAMP, key_id_for(public))
    assert not verify_checkpoint_signature(public, other_message, signature)
    other_key = raw_public_key(Ed25519PrivateKey.generate())
    assert not verify_checkpoint_signature(other_key, message, signature)
    assert not verify_checkpoint_signature(
        public, message, bytes([signature[0] ^ 1]) + signature[1:]
    )
    assert not verify_checkpoint_signature(public, message, signature[:63])
    assert not verify_checkpoint_signature(public[:31], message, signature)
    # Arguments in the wrong order fail closed.
    assert not verify_checkpoint_signature(public, signature, message)
    with pytest.raises(ValueError):
        sign_checkpoint(private_key, b"anything else")


# --- bundles ----------------------------------------------------------------------------------


def test_a_valid_bundle_verifies(bundle):
    assert verify_bundle(bundle) == []


def test_a_bundle_survives_its_json_file(bundle):
    text = json.dumps(bundle, indent=2, ensure_ascii=False)
    assert verify_bundle(load_bundle(text)) == []


def test_an_erased_body_still_verifies(private_key):
    bundle = make_bundle(private_key, chosen=(3, 4, 19), erased=(4,))
    assert entry(bundle, 4)["body"] is None
    assert verify_bundle(bundle) == []


def test_every_entry_of_odd_sized_logs_verifies(private_key):
    for size in (1, 2, 3, 7, 33):
        bundle = make_bundle(private_key, chosen=tuple(range(size)), size=size)
        assert verify_bundle(bundle) == [], size


def test_a_changed_body_byte_is_named(bundle):
    entry(bundle, 5)["body"]["prompt"] = entry(bundle, 5)["body"]["prompt"].replace("5", "6", 1)
    assert verify_bundle(bundle) == ["entry seq=5: body digest mismatch"]


def test_a_changed_leaf_is_named(bundle):
    entry(bundle, 17)["leaf"]["actor_name"] = "someone-else"
    assert verify_bundle(bundle) == [
        "entry seq=17: leaf does not match its inclusion proof for checkpoint size 20"
    ]


def test_a_leaf_claiming_another_body_is_named(bundle):
    # Swapping in the digest of a forged body breaks the leaf, not just the body.
    forged = {"prompt": "nothing happened"}
    entry(bundle, 0)["body"] = forged
    entry(bundle, 0)["leaf"]["body_digest"] = body_digest(forged)
    assert verify_bundle(bundle) == [
        "entry seq=0: leaf does not match its inclusion proof for checkpoint size 20"
    ]


def test_a_changed_proof_hash_is_named(bundle):
    proof = entry(bundle, 5)["inclusion_proof"]
    proof[1] = flip_hex(proof[1])
    assert verify_bundle(bundle) == [
        "entry seq=5: leaf does not match its inclusion proof for checkpoint size 20"
    ]


def test_an_entry_moved_to_another_seq_is_named(bundle):
    moved = entry(bundle, 5)
    moved["seq"] = 6
    assert verify_bundle(bundle) == [
        "entry seq=6: leaf says seq=5",
        "entry seq=6: leaf does not match its inclusion proof for checkpoint size 20",
    ]


def test_a_changed_checkpoint_root_is_named(bundle):
    bundle["checkpoint"]["root_hash"] = flip_hex(bundle["checkpoint"]["root_hash"])
    assert verify_bundle(bundle) == [
        "checkpoint: bad signature",
        *all_entries_fail_their_proof(bundle),
    ]


def test_a_changed_tree_size_is_named(bundle):
    bundle["checkpoint"]["tree_size"] = 40
    problems = verify_bundle(bundle)
    assert problems[0] == "checkpoint: bad signature"
    assert problems[1:] == all_entries_fail_their_proof(bundle)


def test_a_changed_timestamp_is_named(bundle):
    bundle["checkpoint"]["timestamp"] = "2026-11-25T13:17:45.123456Z"
    assert verify_bundle(bundle) == ["checkpoint: bad signature"]


def test_a_changed_signature_is_named(bundle):
    signature = bytearray(base64.b64decode(bundle["checkpoint"]["signature"]))
    signature[10] ^= 0x01
    bundle["checkpoint"]["signature"] = base64.b64encode(bytes(signature)).decode()
    assert verify_bundle(bundle) == ["checkpoint: bad signature"]


def test_a_signature_that_is_not_base64_is_named(bundle):
    bundle["checkpoint"]["signature"] = "not base64!"
    assert verify_bundle(bundle) == [
        "checkpoint: signature is not base64 of a 64-byte Ed25519 signature"
    ]


def test_another_public_key_is_named(bundle):
    other = raw_public_key(Ed25519PrivateKey.generate())
    bundle["public_key"] = base64.b64encode(other).decode()
    assert verify_bundle(bundle) == [
        "checkpoint: key id does not match public key",
        "checkpoint: bad signature",
    ]


def test_a_changed_key_id_is_named(bundle):
    bundle["checkpoint"]["key_id"] = flip_hex(bundle["checkpoint"]["key_id"])
    assert verify_bundle(bundle) == [
        "checkpoint: key id does not match public key",
        "checkpoint: bad signature",
    ]


def test_a_checkpoint_resigned_by_another_key_is_self_consistent_but_shows_its_key_id(
    private_key, bundle
):
    # An attacker with their own key can make a bundle that verifies; the key id gives it away.
    attacker_key = Ed25519PrivateKey.generate()
    forged = make_bundle(attacker_key)
    assert verify_bundle(forged) == []
    assert forged["checkpoint"]["key_id"] != bundle["checkpoint"]["key_id"]


def test_a_malformed_public_key_is_named(bundle):
    bundle["public_key"] = base64.b64encode(b"short").decode()
    assert verify_bundle(bundle) == ["public_key: not base64 of a 32-byte Ed25519 public key"]


def test_an_entry_beyond_the_checkpoint_is_named(private_key):
    bundle = make_bundle(private_key, chosen=(2,))
    moved = entry(bundle, 2)
    moved["seq"] = moved["leaf"]["seq"] = 25
    assert verify_bundle(bundle) == ["entry seq=25: beyond checkpoint size 20"]


def test_a_body_the_leaf_does_not_commit_to_is_named(bundle):
    entry(bundle, 5)["leaf"]["body_digest"] = ""
    problems = verify_bundle(bundle)
    assert "entry seq=5: body present but the leaf commits to no body" in problems


def test_a_leaf_without_a_body_digest_is_named(bundle):
    del entry(bundle, 5)["leaf"]["body_digest"]
    assert "entry seq=5: leaf has no body_digest" in verify_bundle(bundle)


def test_a_duplicated_entry_is_named(bundle):
    bundle["entries"].append(copy.deepcopy(entry(bundle, 5)))
    assert verify_bundle(bundle) == ["entry seq=5: appears more than once"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda b: b.update(format="steward-evidence/2"), "bundle: format"),
        (lambda b: b.update(entries={}), "entries: missing or not a list"),
        (lambda b: b.update(checkpoint=None), "checkpoint: missing or not an object"),
        (lambda b: b["checkpoint"].update(tree_size=-1), "checkpoint: tree_size -1"),
        (lambda b: b["checkpoint"].update(root_hash="AB" * 32), "checkpoint: root_hash 'ABAB"),
        (lambda b: b["checkpoint"].update(timestamp="2026-11-24 13:00"), "checkpoint: timestamp"),
        (
            lambda b: b["checkpoint"].update(timestamp="2026-11-24T13:00:00+02:00"),
            "checkpoint: timestamp",
        ),
        (lambda b: b["checkpoint"].update(key_id=None), "checkpoint: key_id None"),
        (lambda b: b["entries"].append("x"), "entry #3: not an object"),
        (lambda b: b["entries"][0].update(seq="0"), "entry #0: seq '0'"),
        (lambda b: b["entries"][0].update(leaf=[]), "entry seq=0: leaf is missing"),
        (
            lambda b: b["entries"][0]["leaf"].update(score=float("nan")),
            "entry seq=0: leaf cannot be canonical JSON",
        ),
        (
            lambda b: b["entries"][0].update(inclusion_proof=["zz"]),
            "entry seq=0: inclusion_proof is not a list",
        ),
        (
            lambda b: b["entries"][0].update(body={"big": 2**60}),
            "entry seq=0: body cannot be canonical JSON",
        ),
    ],
)
def test_malformed_bundles_name_the_field(bundle, change, expected):
    change(bundle)
    problems = verify_bundle(bundle)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_a_bundle_that_is_not_an_object_is_named():
    assert verify_bundle([]) == ["bundle: not a JSON object"]


# --- the offline command ------------------------------------------------------------------------


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run scripts/verify_evidence.py as a user would, from another directory."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_script_accepts_a_valid_bundle(bundle, tmp_path):
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle, indent=2), encoding="utf-8")
    result = run_script(str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    root = bundle["checkpoint"]["root_hash"]
    assert result.stdout.startswith(
        f"OK: 3 entries verified against checkpoint size 20 root {root}"
    )


def test_script_names_each_problem_and_fails(bundle, tmp_path):
    entry(bundle, 5)["body"]["tokens"] = 51
    bundle["checkpoint"]["timestamp"] = "2026-11-25T00:00:00Z"
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    result = run_script(str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "checkpoint: bad signature",
        "entry seq=5: body digest mismatch",
        "FAILED: 2 problem(s)",
    ]


def test_script_fails_on_a_file_it_cannot_read(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": ', encoding="utf-8")
    assert run_script(str(broken), cwd=tmp_path).returncode == 1
    missing = run_script(str(tmp_path / "missing.json"), cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stdout.startswith("FAILED: cannot read")


def test_script_needs_neither_django_nor_a_database(bundle, tmp_path):
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    probe = (
        "import runpy, sys\n"
        f"status = runpy.run_path({str(SCRIPT)!r})['main']([{str(path)!r}])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'sqlite3', "
        "'psycopg', 'psycopg2'))\n"
        "print(status, loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip().splitlines()[-1] == "0 []", result.stdout + result.stderr
