"""/healthz and /readyz: unauthenticated, cheap, quiet, and a 503 that names what failed."""

import logging

import pytest
from django.db import OperationalError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEntry

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_touching_the_database():
    with CaptureQueriesContext(connection) as queries:
        response = Client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert len(queries) == 0
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.redis
def test_readyz_is_ok_when_database_and_redis_answer(settings):
    settings.CELERY_BROKER_URL = settings.REDIS_URL
    response = Client().get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
    assert not AuditEntry.objects.exists()


def test_readyz_names_an_unreachable_redis_and_logs_nothing(settings, caplog):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"] == {"database": "ok", "broker": "failed"}
    assert "ConnectionError" in body["failed"]["broker"]
    assert not [r for r in caplog.records if r.name == "django.request"]


def test_readyz_checks_the_filesystem_brokers_folder(settings, tmp_path):
    settings.CELERY_BROKER_URL = "filesystem://localhost/"
    settings.BROKER_DIR = tmp_path
    assert Client().get("/readyz").status_code == 200
    settings.BROKER_DIR = tmp_path / "gone"
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert "missing" in response.json()["failed"]["broker"]


def test_readyz_names_an_unreachable_database(monkeypatch, settings, tmp_path):
    settings.CELERY_BROKER_URL = "filesystem://localhost/"
    settings.BROKER_DIR = tmp_path

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", refuse)
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "failed", "broker": "ok"}
    assert response.json()["failed"]["database"] == "OperationalError: connection refused"


def test_probes_refuse_writes():
    assert Client().post("/healthz").status_code == 405
