"""The Ed25519 key that signs checkpoints, read from outside the database.

AUDIT_SIGNING_KEY (or the file named by AUDIT_SIGNING_KEY_FILE) holds the private key: base64 of
the 32 raw bytes, or a PEM (PKCS#8) block. With DEBUG on and no key set, a development key is
generated once under VAR_DIR; with DEBUG off the settings refuse to start without one.
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEV_KEY_NAME = "audit-signing-key"


def parse_private_key(text: str) -> Ed25519PrivateKey:
    """Parse an Ed25519 private key given as base64 of its 32 raw bytes or as PEM."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ImproperlyConfigured("AUDIT_SIGNING_KEY must be an Ed25519 key.")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ImproperlyConfigured("AUDIT_SIGNING_KEY is neither PEM nor base64.") from exc
    if len(raw) != 32:
        raise ImproperlyConfigured("AUDIT_SIGNING_KEY must hold 32 raw bytes (base64).")
    return Ed25519PrivateKey.from_private_bytes(raw)


def encode_private_key(key: Ed25519PrivateKey) -> str:
    """Return a private key as base64 of its 32 raw bytes (the AUDIT_SIGNING_KEY format)."""
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode()


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """Return the 32 raw bytes of the public half of a key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _dev_key_text() -> str:
    """Return the development key under VAR_DIR, creating it (mode 0600) on first use."""
    path = Path(settings.VAR_DIR) / DEV_KEY_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(encode_private_key(Ed25519PrivateKey.generate()) + "\n")
    return path.read_text()


@lru_cache(maxsize=8)
def _load(text: str) -> Ed25519PrivateKey:
    """Parse and cache a key by its text."""
    return parse_private_key(text)


def signing_key() -> Ed25519PrivateKey:
    """Return the checkpoint signing key (a dev key under DEBUG when none is configured)."""
    text = getattr(settings, "AUDIT_SIGNING_KEY", None)
    if not text:
        if not settings.DEBUG:
            raise ImproperlyConfigured(
                "AUDIT_SIGNING_KEY is not set. With DEBUG off, set AUDIT_SIGNING_KEY or "
                "AUDIT_SIGNING_KEY_FILE to an Ed25519 private key (base64 of 32 bytes, or PEM)."
            )
        text = _dev_key_text()
    return _load(text)


def public_key() -> bytes:
    """Return the raw public key that verifies the checkpoints."""
    return public_key_bytes(signing_key())
