"""Provider API keys encrypted at rest with a key from the environment."""

import os
import stat

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from agents import secrets


@pytest.fixture(autouse=True)
def _fresh_cipher():
    secrets._fernet.cache_clear()
    yield
    secrets._fernet.cache_clear()


def test_round_trip_and_the_stored_text_does_not_contain_the_key(settings):
    settings.STEWARD_SECRETS_KEY = Fernet.generate_key().decode()
    token = secrets.encrypt("sk-live-abc")
    assert "sk-live-abc" not in token
    assert secrets.decrypt(token) == "sk-live-abc"
    assert secrets.encrypt("") == "" and secrets.decrypt("") == ""


def test_rotation_new_key_first_old_key_still_decrypts(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.STEWARD_SECRETS_KEY = old
    token = secrets.encrypt("sk-old")
    settings.STEWARD_SECRETS_KEY = f"{new},{old}"
    assert secrets.decrypt(token) == "sk-old"
    settings.STEWARD_SECRETS_KEY = new
    with pytest.raises(secrets.SecretUnreadable):
        secrets.decrypt(token)


def test_tampered_token_is_refused_without_details(settings):
    settings.STEWARD_SECRETS_KEY = Fernet.generate_key().decode()
    token = secrets.encrypt("sk-x")
    with pytest.raises(secrets.SecretUnreadable) as caught:
        secrets.decrypt(token[:-4] + "AAAA")
    assert "sk-x" not in str(caught.value)


def test_a_bad_key_is_a_configuration_error(settings):
    settings.STEWARD_SECRETS_KEY = "not-a-fernet-key"
    with pytest.raises(ImproperlyConfigured, match="Fernet"):
        secrets.encrypt("x")


def test_production_without_a_key_refuses(settings):
    settings.STEWARD_SECRETS_KEY = None
    settings.DEBUG = False
    with pytest.raises(ImproperlyConfigured, match="STEWARD_SECRETS_KEY"):
        secrets.encrypt("x")


def test_debug_without_a_key_makes_a_private_dev_key(settings, tmp_path):
    settings.STEWARD_SECRETS_KEY = None
    settings.DEBUG = True
    settings.VAR_DIR = tmp_path
    token = secrets.encrypt("sk-dev")
    path = tmp_path / secrets.DEV_KEY_NAME
    assert path.exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert secrets.decrypt(token) == "sk-dev"


def test_system_check_refuses_production_without_a_key(settings):
    from agents.checks import secrets_key_configured

    settings.DEBUG = False
    settings.STEWARD_SECRETS_KEY = None
    assert [error.id for error in secrets_key_configured(None)] == ["agents.E001"]
    settings.STEWARD_SECRETS_KEY = Fernet.generate_key().decode()
    assert secrets_key_configured(None) == []
