"""The checkpoint key lives outside the database: from the environment or a file, a dev key
under DEBUG, and no start at all without one when DEBUG is off."""

import os
import stat
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from audit import keys
from audit.evidence import key_id_for


def _django(env: dict) -> subprocess.CompletedProcess:
    """Start Django in a child process with `env` and print the checkpoint key id."""
    code = (
        "import django; django.setup(); from audit import keys; "
        "from audit.evidence import key_id_for; print(key_id_for(keys.public_key()))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_SIGNING_KEY")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=django_settings.BASE_DIR,
        env={**base, "DJANGO_SETTINGS_MODULE": "orchestrator.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dev_key_is_generated_once_under_var_dir(settings, tmp_path):
    settings.AUDIT_SIGNING_KEY = None
    settings.DEBUG = True
    settings.VAR_DIR = tmp_path
    first = keys.public_key()
    assert keys.public_key() == first
    path = tmp_path / keys.DEV_KEY_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_missing_key_without_debug_is_improperly_configured(settings):
    settings.AUDIT_SIGNING_KEY = None
    settings.DEBUG = False
    with pytest.raises(ImproperlyConfigured, match="AUDIT_SIGNING_KEY"):
        keys.signing_key()


def test_settings_refuse_to_start_without_a_key_when_debug_is_off():
    result = _django({"DEBUG": "0", "SECRET_KEY": "s" * 50})
    assert result.returncode != 0
    assert "AUDIT_SIGNING_KEY is not set" in result.stderr


def test_key_is_read_from_a_file(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "audit.key"
    path.write_text(keys.encode_private_key(key) + "\n")
    result = _django({"DEBUG": "0", "SECRET_KEY": "s" * 50, "AUDIT_SIGNING_KEY_FILE": str(path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == key_id_for(keys.public_key_bytes(key))


def test_bad_key_is_refused():
    with pytest.raises(ImproperlyConfigured, match="32 raw bytes"):
        keys.parse_private_key("c2hvcnQ=")
