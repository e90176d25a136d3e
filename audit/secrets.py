"""Secrets encrypted at rest with Fernet (provider API keys, webhook signing secrets); the key
comes from outside the database. It lives in audit, the lowest app, so every app can use it.

STEWARD_SECRETS_KEY (or the file named by STEWARD_SECRETS_KEY_FILE) holds one or more Fernet
keys separated by commas: the first encrypts, all decrypt (rotation). With DEBUG on and none
set, a development key is generated once under VAR_DIR; with DEBUG off the settings refuse to
start without one. Plain keys are never logged and never shown back in the admin.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEV_KEY_NAME = "secrets-key"


class SecretUnreadable(Exception):
    """A stored secret that the configured keys cannot decrypt (wrong key, or tampered)."""


def _dev_key_text() -> str:
    """Return the development key under VAR_DIR, creating it (mode 0600) on first use."""
    path = Path(settings.VAR_DIR) / DEV_KEY_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it meanwhile
            return path.read_text()
        with os.fdopen(fd, "w") as handle:
            handle.write(Fernet.generate_key().decode() + "\n")
    return path.read_text()


@lru_cache(maxsize=8)
def _fernet(text: str) -> MultiFernet:
    """Build the cipher from the configured key text."""
    keys = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "STEWARD_SECRETS_KEY must hold Fernet keys (urlsafe base64 of 32 bytes), "
            "separated by commas."
        ) from exc


def cipher() -> MultiFernet:
    """Return the cipher for secrets (a dev key under DEBUG when none is configured)."""
    text = getattr(settings, "STEWARD_SECRETS_KEY", None)
    if not text:
        if not settings.DEBUG:
            raise ImproperlyConfigured(
                "STEWARD_SECRETS_KEY is not set. With DEBUG off, set STEWARD_SECRETS_KEY or "
                "STEWARD_SECRETS_KEY_FILE to a Fernet key (python -c 'from cryptography.fernet "
                "import Fernet; print(Fernet.generate_key().decode())')."
            )
        text = _dev_key_text()
    return _fernet(text.strip())


def encrypt(plain: str) -> str:
    """Encrypt a secret for storage; the empty secret stays empty."""
    if not plain:
        return ""
    return cipher().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    """Decrypt a stored secret; refuse without saying more when the key does not fit."""
    if not token:
        return ""
    try:
        return cipher().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "a stored secret cannot be decrypted with the configured STEWARD_SECRETS_KEY"
        ) from None
