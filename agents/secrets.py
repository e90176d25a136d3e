"""Provider API keys are encrypted with the one secrets cipher every app shares (audit.secrets)."""

from audit.secrets import DEV_KEY_NAME, SecretUnreadable, _fernet, cipher, decrypt, encrypt

__all__ = ["DEV_KEY_NAME", "SecretUnreadable", "_fernet", "cipher", "decrypt", "encrypt"]
