"""Evidence bundles: canonical JSON, signed checkpoints, and the offline check of a bundle.

Shared by the exporter and by scripts/verify_evidence.py, so it imports nothing of Django:
only the standard library, `cryptography` and audit/merkle.py.

Canonical JSON
--------------
`canonical_json` is RFC 8785 (JSON Canonicalization Scheme) for the values JSON can hold:
object keys sorted by their UTF-16 code units, no whitespace, strings as UTF-8 with only the
escapes RFC 8785 requires (the quote, the backslash, and control characters, as \\b \\t \\n \\f \\r
or \\u00xx), and numbers as ECMAScript prints a binary64 double. So a value that goes through
JSON text and back (a database column, an exported bundle) canonicalises to the same bytes.
What RFC 8785 cannot carry exactly is refused rather than rounded:
* NaN and the infinities (ValueError);
* integers that RFC 8785, which writes every number as a binary64 double, would change
  (ValueError): 2**53 + 1 would become 9007199254740992. Every int up to 2**53 in size is
  written with its own digits, as is a larger one that is the shortest form of a double
  (48964834474015350, the way an integral float comes back from canonical text);
* strings that are not valid Unicode, i.e. lone surrogates (ValueError);
* object keys that are not strings, and anything that is not None, bool, int, float, str,
  list, tuple or dict (TypeError). Subclasses (an enum that is a str, an OrderedDict) are
  written as their base type, as the json module does.
Floats are written per RFC 8785 / ECMAScript, not rejected: 3.0 and 3 are both "3", 1e21 is
"1e+21", 1e-7 is "1e-7". The json module writes everything else exactly as RFC 8785 does, so
it does the work (in C) unless a float or a key outside the Basic Multilingual Plane is present.

Checkpoints
-----------
A checkpoint commits to the tree of the first `tree_size` leaves. The Ed25519 key signs
`checkpoint_message(...)`, the UTF-8 bytes of these lines, each ending in a newline:

    steward-checkpoint/1
    <key_id>
    <tree_size, decimal>
    <root_hash, 64 lowercase hex digits>
    <timestamp, ISO 8601 UTC>

The key id is the first 16 hex digits of SHA-256 over the raw 32-byte public key.

Bundle format (JSON), "steward-evidence/1"
------------------------------------------
    {"format": "steward-evidence/1",
     "public_key": "<base64 of the raw 32-byte Ed25519 public key>",
     "checkpoint": {"tree_size": N, "root_hash": "<hex>", "timestamp": "<ISO 8601 UTC>",
                    "key_id": "<hex>", "signature": "<base64 of the 64-byte signature>"},
     "entries": [{"seq": <0-based leaf index>,
                  "leaf": {<object whose canonical JSON is the leaf's bytes;
                            it holds "body_digest": "<hex SHA-256 of the body's canonical
                            JSON>", or "" for an entry without a body>},
                  "body": <the JSON body, or null when erased or absent>,
                  "inclusion_proof": ["<hex>", ...]}]}

A bundle may also carry a consistency proof from an older checkpoint (one its reader kept from
before, say) to its own checkpoint:

     "consistency": {"old_checkpoint": {<a checkpoint, as above, signed by the same key>},
                     "proof": ["<hex>", ...]}

It verifies when the old checkpoint's signature does, its size is at most the bundle's, and the
proof shows (RFC 9162 2.1.4.2) that the tree of the bundle's checkpoint extends the old one:
nothing the old checkpoint covered was changed, removed or reordered since.

An entry verifies when SHA-256(0x00 || canonical_json(leaf)) at index `seq` reaches the
checkpoint's root through its inclusion proof (RFC 9162 2.1.3.2) and, if its body is not null,
`body_digest(body)` equals the leaf's body_digest; a leaf that carries its own "seq" must carry
the entry's. An erased body (null) still verifies: the leaf keeps the digest, so what was said
can no longer be read but can no longer be changed either. `load_bundle` reads the file,
refusing duplicate keys and NaN/Infinity, which a reader and the verifier could take apart.
The public key in a bundle only proves the bundle is self-consistent: a reader must compare its
key id with the key they trust.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.merkle import HASH_SIZE, leaf_hash, verify_consistency, verify_inclusion

BUNDLE_FORMAT = "steward-evidence/1"
CHECKPOINT_HEADER = b"steward-checkpoint/1\n"
KEY_ID_LENGTH = 16
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
MAX_EXACT_INT = 2**53 - 1

_HEX_HASH = re.compile(r"[0-9a-f]{64}")
_NONE_TYPE = type(None)
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)
_encode_string = json.encoder.encode_basestring


# --- canonical JSON ---------------------------------------------------------------------------


def _check_int(value: int) -> None:
    """Refuse an int that RFC 8785 would not write with its own digits."""
    if -MAX_EXACT_INT <= value <= MAX_EXACT_INT:
        return
    # RFC 8785 writes a number as its binary64 double. A larger int passes when that writes
    # its own digits (as for an integral float read back from canonical text); any other
    # would silently become another number.
    try:
        written = format_number(float(value))
    except OverflowError:
        written = "infinity"
    if written != int.__repr__(value):
        raise ValueError(
            f"canonical JSON cannot hold the integer {value}: RFC 8785 would write {written}"
        )


def _check_value(value) -> bool:
    """Check that a value can be canonical JSON; tell whether it needs the RFC 8785 writer."""
    kind = type(value)
    if kind is dict or kind is list or kind is tuple:
        return _check_container(value, kind is dict)
    if kind is str or kind is bool or kind is _NONE_TYPE:
        return False
    if kind is int:
        _check_int(value)
        return False
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"canonical JSON cannot hold {value!r}")
        return True
    if isinstance(value, str):
        return False
    if isinstance(value, int):
        _check_int(value)
        return False
    if isinstance(value, dict):
        return _check_container(value, True)
    if isinstance(value, list | tuple):
        return _check_container(value, False)
    raise TypeError(f"canonical JSON cannot hold a {kind.__name__}")


def _check_container(container, is_object: bool) -> bool:
    """Check a dict's keys and every value inside a dict or list (the hot loop, kept flat)."""
    needs_rfc8785_writer = False
    if is_object:
        for key in container:
            if not isinstance(key, str):
                raise TypeError(f"canonical JSON object keys are strings, not {key!r}")
            # Python sorts by code point, RFC 8785 by UTF-16 unit: they differ only beyond U+FFFF.
            if not key.isascii() and max(key) > "\uffff":
                needs_rfc8785_writer = True
        values = container.values()
    else:
        values = container
    for value in values:
        kind = type(value)
        if kind is str or kind is bool or kind is _NONE_TYPE:
            continue
        if kind is int and -MAX_EXACT_INT <= value <= MAX_EXACT_INT:
            continue
        if _check_value(value):
            needs_rfc8785_writer = True
    return needs_rfc8785_writer


def format_number(value: float) -> str:
    """Return a finite float as RFC 8785 (ECMAScript Number::toString) writes it."""
    if not math.isfinite(value):
        raise ValueError(f"canonical JSON cannot hold {value!r}")
    if value == 0:
        return "0"
    # repr() gives the shortest digits that round-trip, as ECMAScript does; only the layout
    # (where the point goes, when to switch to an exponent) differs.
    text = repr(float(value))
    sign = "-" if text.startswith("-") else ""
    mantissa, _, exponent = text.lstrip("-").partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + int(exponent or 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        body = digits + "0" * (point - count)
    elif 0 < point <= 21:
        body = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        body = "0." + "0" * -point + digits
    else:
        power = point - 1
        head = digits[0] + ("." + digits[1:] if count > 1 else "")
        body = f"{head}e{'+' if power >= 0 else '-'}{abs(power)}"
    return sign + body


def _utf16_order(item: tuple[str, object]) -> bytes:
    """Sort key of an object member: its name as UTF-16 code units (big-endian keeps order)."""
    return item[0].encode("utf-16-be", "surrogatepass")


def _write_rfc8785(value, out: list[str]) -> None:
    """Append the RFC 8785 text of an already checked value to `out`."""
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_encode_string(value))
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(format_number(value))
    elif isinstance(value, dict):
        out.append("{")
        for position, (key, member) in enumerate(sorted(value.items(), key=_utf16_order)):
            if position:
                out.append(",")
            out.append(_encode_string(key))
            out.append(":")
            _write_rfc8785(member, out)
        out.append("}")
    else:
        out.append("[")
        for position, member in enumerate(value):
            if position:
                out.append(",")
            _write_rfc8785(member, out)
        out.append("]")


def canonical_json(obj) -> bytes:
    """Return the RFC 8785 canonical JSON of `obj` as UTF-8 bytes (see the module docstring)."""
    if _check_value(obj):
        parts: list[str] = []
        _write_rfc8785(obj, parts)
        text = "".join(parts)
    else:
        text = _ENCODER.encode(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("canonical JSON cannot hold a lone surrogate (not valid Unicode)") from exc


def body_digest(body) -> str:
    """Return the hex SHA-256 of a body's canonical JSON."""
    return hashlib.sha256(canonical_json(body)).hexdigest()


def load_bundle(text: str | bytes) -> dict:
    """Parse bundle JSON, refusing duplicate keys and NaN/Infinity (ValueError)."""

    def no_duplicates(pairs):
        """Build an object, refusing a key seen twice."""
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r} in bundle JSON")
            seen[key] = value
        return seen

    def no_constants(name):
        """Refuse NaN, Infinity and -Infinity."""
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)


# --- checkpoints ------------------------------------------------------------------------------


def key_id_for(public_key_bytes: bytes) -> str:
    """Return the key id of a raw Ed25519 public key: 16 hex digits of its SHA-256."""
    return hashlib.sha256(bytes(public_key_bytes)).hexdigest()[:KEY_ID_LENGTH]


def _root_hex(root_hash: bytes | str) -> str:
    """Return a root hash as 64 lowercase hex digits, from its bytes or that same text."""
    if isinstance(root_hash, bytes | bytearray):
        if len(root_hash) != HASH_SIZE:
            raise ValueError(f"a root hash is {HASH_SIZE} bytes, not {len(root_hash)}")
        return bytes(root_hash).hex()
    if isinstance(root_hash, str) and _HEX_HASH.fullmatch(root_hash):
        return root_hash
    raise ValueError(f"a root hash is 32 bytes or 64 lowercase hex digits, not {root_hash!r}")


def checkpoint_message(
    tree_size: int, root_hash: bytes | str, timestamp: str, key_id: str
) -> bytes:
    """Return the bytes a checkpoint's signature covers (root as bytes or as lowercase hex)."""
    if isinstance(tree_size, bool) or not isinstance(tree_size, int) or tree_size < 0:
        raise ValueError(f"a tree size is a non-negative int, not {tree_size!r}")
    for name, field in (("timestamp", timestamp), ("key id", key_id)):
        # One field per line: a newline inside a field could make two checkpoints sign alike.
        if not isinstance(field, str) or not field or "\n" in field or "\r" in field:
            raise ValueError(f"a checkpoint {name} is one non-empty line, not {field!r}")
    root_hex = _root_hex(root_hash)
    return CHECKPOINT_HEADER + f"{key_id}\n{tree_size}\n{root_hex}\n{timestamp}\n".encode()


def sign_checkpoint(private_key: Ed25519PrivateKey, message: bytes) -> bytes:
    """Return the 64-byte Ed25519 signature of a `checkpoint_message`."""
    if not message.startswith(CHECKPOINT_HEADER):
        raise ValueError("only a checkpoint_message() is signed with the checkpoint key")
    return private_key.sign(message)


def verify_checkpoint_signature(public_key_bytes: bytes, message: bytes, signature: bytes) -> bool:
    """Tell whether `signature` is the raw Ed25519 public key's signature of `message`."""
    if not isinstance(message, bytes) or not message.startswith(CHECKPOINT_HEADER):
        return False
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_key_bytes)).verify(signature, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


# --- bundles ----------------------------------------------------------------------------------


def _base64(value, size: int) -> bytes | None:
    """Decode strict base64 of exactly `size` bytes, or return None."""
    if not isinstance(value, str):
        return None
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == size else None


def _is_utc_time(value) -> bool:
    """Tell whether a value is an ISO 8601 time in UTC."""
    if not isinstance(value, str):
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.utcoffset() == timedelta(0)


def _is_count(value) -> bool:
    """Tell whether a value is a non-negative int (and not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_checkpoint(checkpoint, public_key: bytes | None, problems: list[str]):
    """Check a bundle's checkpoint; return (tree_size, root) when both are well formed."""
    if not isinstance(checkpoint, dict):
        problems.append("checkpoint: missing or not an object")
        return None, None
    size = checkpoint.get("tree_size")
    root_hex = checkpoint.get("root_hash")
    timestamp = checkpoint.get("timestamp")
    key_id = checkpoint.get("key_id")
    signature = _base64(checkpoint.get("signature"), SIGNATURE_SIZE)
    well_formed = True
    if not _is_count(size):
        problems.append(f"checkpoint: tree_size {size!r} is not a non-negative integer")
        size, well_formed = None, False
    if not (isinstance(root_hex, str) and _HEX_HASH.fullmatch(root_hex)):
        problems.append(f"checkpoint: root_hash {root_hex!r} is not 64 lowercase hex digits")
        root_hex, well_formed = None, False
    if not _is_utc_time(timestamp):
        problems.append(f"checkpoint: timestamp {timestamp!r} is not an ISO 8601 UTC time")
        well_formed = False
    if not (isinstance(key_id, str) and key_id and "\n" not in key_id and "\r" not in key_id):
        problems.append(f"checkpoint: key_id {key_id!r} is not a key id")
        well_formed = False
    elif public_key is not None and key_id != key_id_for(public_key):
        problems.append("checkpoint: key id does not match public key")
    if signature is None:
        problems.append("checkpoint: signature is not base64 of a 64-byte Ed25519 signature")
    elif well_formed and public_key is not None:
        message = checkpoint_message(size, root_hex, timestamp, key_id)
        if not verify_checkpoint_signature(public_key, message, signature):
            problems.append("checkpoint: bad signature")
    root = bytes.fromhex(root_hex) if root_hex else None
    return size, root


def _decode_proof(proof) -> list[bytes] | None:
    """Decode an inclusion proof of hex hashes, or return None when it is malformed."""
    if not isinstance(proof, list):
        return None
    if not all(isinstance(node, str) and _HEX_HASH.fullmatch(node) for node in proof):
        return None
    return [bytes.fromhex(node) for node in proof]


def _check_entry(entry, position: int, size, root, seen: set[int], problems: list[str]) -> None:
    """Check one entry of a bundle against the checkpoint's size and root."""
    if not isinstance(entry, dict):
        problems.append(f"entry #{position}: not an object")
        return
    seq = entry.get("seq")
    if not _is_count(seq):
        problems.append(f"entry #{position}: seq {seq!r} is not a non-negative integer")
        return
    name = f"entry seq={seq}"
    if seq in seen:
        problems.append(f"{name}: appears more than once")
    seen.add(seq)
    leaf = entry.get("leaf")
    if not isinstance(leaf, dict):
        problems.append(f"{name}: leaf is missing or not an object")
        return
    try:
        digest = leaf_hash(canonical_json(leaf))
    except (TypeError, ValueError) as exc:
        problems.append(f"{name}: leaf cannot be canonical JSON ({exc})")
        return
    if "seq" in leaf and leaf["seq"] != seq:
        problems.append(f"{name}: leaf says seq={leaf['seq']!r}")
    proof = _decode_proof(entry.get("inclusion_proof"))
    if proof is None:
        problems.append(f"{name}: inclusion_proof is not a list of 64-digit lowercase hex hashes")
    elif size is not None and seq >= size:
        problems.append(f"{name}: beyond checkpoint size {size}")
    elif (
        size is not None
        and root is not None
        and not verify_inclusion(digest, seq, size, proof, root)
    ):
        problems.append(
            f"{name}: leaf does not match its inclusion proof for checkpoint size {size}"
        )
    _check_body(name, leaf, entry.get("body"), problems)


def _check_body(name: str, leaf: dict, body, problems: list[str]) -> None:
    """Check that a present body is the one the leaf's body_digest commits to."""
    committed = leaf.get("body_digest")
    if "body_digest" not in leaf:
        problems.append(f"{name}: leaf has no body_digest")
        return
    if body is None:
        return
    if not committed:
        problems.append(f"{name}: body present but the leaf commits to no body")
        return
    try:
        actual = body_digest(body)
    except (TypeError, ValueError) as exc:
        problems.append(f"{name}: body cannot be canonical JSON ({exc})")
        return
    if actual != committed:
        problems.append(f"{name}: body digest mismatch")


def _check_consistency(consistency, public_key, size, root, problems: list[str]) -> None:
    """Check a bundle's consistency proof from its older checkpoint to its own checkpoint."""
    if not isinstance(consistency, dict):
        problems.append("consistency: not an object")
        return
    old_problems: list[str] = []
    old_size, old_root = _check_checkpoint(
        consistency.get("old_checkpoint"), public_key, old_problems
    )
    problems.extend(
        p.replace("checkpoint:", "consistency: old checkpoint:", 1) for p in old_problems
    )
    proof = _decode_proof(consistency.get("proof"))
    if proof is None:
        problems.append("consistency: proof is not a list of 64-digit lowercase hex hashes")
        return
    if old_size is None or old_root is None or size is None or root is None:
        return
    if old_size > size:
        problems.append(
            f"consistency: old checkpoint size {old_size} is larger than the checkpoint's {size}"
        )
    elif not verify_consistency(old_size, size, old_root, root, proof):
        problems.append(
            f"consistency: the tree of size {size} does not extend the old checkpoint "
            f"(size {old_size}, root {old_root.hex()}): the proof does not verify"
        )


def verify_bundle(bundle: dict, since: dict | None = None) -> list[str]:
    """Return every problem found in an evidence bundle, each naming what failed; [] if valid.

    `since` is a checkpoint the reader kept from before: the bundle must then prove, with its
    consistency proof, that its checkpoint extends exactly that one.
    """
    if not isinstance(bundle, dict):
        return ["bundle: not a JSON object"]
    if bundle.get("format") != BUNDLE_FORMAT:
        return [f"bundle: format {bundle.get('format')!r} is not {BUNDLE_FORMAT!r}"]
    problems: list[str] = []
    public_key = _base64(bundle.get("public_key"), PUBLIC_KEY_SIZE)
    if public_key is None:
        problems.append("public_key: not base64 of a 32-byte Ed25519 public key")
    size, root = _check_checkpoint(bundle.get("checkpoint"), public_key, problems)
    entries = bundle.get("entries")
    if not isinstance(entries, list):
        problems.append("entries: missing or not a list")
        return problems
    seen: set[int] = set()
    for position, entry in enumerate(entries):
        _check_entry(entry, position, size, root, seen, problems)
    consistency = bundle.get("consistency")
    if consistency is not None:
        _check_consistency(consistency, public_key, size, root, problems)
    if since is not None:
        _check_since(since, consistency, public_key, problems)
    return problems


def _check_since(since, consistency, public_key, problems: list[str]) -> None:
    """Check that the bundle's proof starts from the checkpoint its reader kept (`since`)."""
    kept_problems: list[str] = []
    kept_size, kept_root = _check_checkpoint(since, public_key, kept_problems)
    problems.extend(p.replace("checkpoint:", "kept checkpoint:", 1) for p in kept_problems)
    if kept_size is None or kept_root is None:
        return
    old = consistency.get("old_checkpoint") if isinstance(consistency, dict) else None
    if not isinstance(old, dict):
        problems.append(
            f"kept checkpoint (size {kept_size}): the bundle has no consistency proof from it"
        )
    elif old.get("tree_size") != kept_size or old.get("root_hash") != kept_root.hex():
        problems.append(
            f"kept checkpoint (size {kept_size}, root {kept_root.hex()}): the bundle's proof "
            f"starts from another checkpoint (size {old.get('tree_size')!r}, root "
            f"{old.get('root_hash')!r})"
        )
