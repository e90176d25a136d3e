"""The web app's shell: sign in and out, where `/` lands each person, the navigation their
roles open, the admin's login kept for administrators, and times in the viewer's zone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.template import Context, Template
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.actors import SYSTEM
from governance import services
from tests.governance.conftest import fresh
from tests.governance.test_admin import client_for

# Where `/` lands each person, and the navigation they see (in order).
LANDING = {
    "alice": ("/inbox/", ["Inbox"]),
    "bob": ("/inbox/", ["Inbox"]),
    "gina": ("/inbox/", ["Inbox", "Runs", "KPIs", "Admin"]),
    "maya": ("/kpis/", ["Inbox", "Runs", "KPIs", "Admin"]),  # a later hop of the chain
    "oscar": (None, []),
}


@pytest.mark.parametrize("name", list(LANDING))
def test_slash_lands_each_person_on_the_page_that_fits(company, name):
    client = client_for(fresh(getattr(company, name)))
    response = client.get("/")
    target, nav = LANDING[name]
    if target is None:
        assert response.status_code == 200
        assert "No role of yours opens a page here yet" in response.content.decode()
    else:
        assert response.status_code == 302 and response["Location"] == target
    page = client.get(target or "/")
    shown = [entry.label for entry in page.context["steward_nav"]]
    assert shown == nav


def test_an_auditor_lands_on_the_audit_report(company):
    auditors = services.create_role(name="Auditors", owner=company.gina, actor=SYSTEM)
    services.grant(auditors, "audit.view_auditentry", actor=SYSTEM)
    services.add_member(auditors, company.oscar, actor=SYSTEM)
    response = client_for(fresh(company.oscar)).get("/")
    assert response.status_code == 302 and response["Location"] == reverse("audit:report")


def test_sign_in_and_out(company):
    client = Client()
    page = client.get(reverse("login"))
    assert "Sign in to Steward" in page.content.decode()
    wrong = client.post(reverse("login"), {"username": "bob", "password": "nope"})
    assert wrong.status_code == 200 and "do not match" in wrong.content.decode()
    ok = client.post(reverse("login"), {"username": "bob", "password": "pw-bob-123"})
    assert ok.status_code == 302 and ok["Location"] == "/"
    assert client.get(reverse("logout")).status_code == 405  # sign-out is a POST
    out = client.post(reverse("logout"))
    assert out.status_code == 302 and out["Location"] == reverse("login")
    assert client.get("/inbox/")["Location"].startswith("/login/")


def test_the_admin_login_serves_administrators_only(company, django_user_model):
    plain = services.create_person(username="paul", password="pw-paul-123", actor=company.gina)
    client = Client()
    response = client.post(
        "/admin/login/", {"username": "paul", "password": "pw-paul-123", "next": "/admin/"}
    )
    assert response.status_code == 302 and response["Location"] == reverse("login")
    client.force_login(plain)
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
    bounced = client.get("/admin/login/?next=/admin/")
    assert bounced.status_code == 302 and bounced["Location"] == reverse("home")
    staff = Client()
    staff.post("/admin/login/", {"username": "gina", "password": "pw-gina-123", "next": "/admin/"})
    assert staff.get("/admin/").status_code == 200


def test_times_show_in_the_viewers_zone_with_utc_on_hover(company):
    moment = dt.datetime(2025, 3, 1, 12, 30, tzinfo=dt.UTC)
    template = Template("{% load steward_time %}{% moment when %}")
    with timezone.override("Europe/Paris"):
        rendered = template.render(Context({"when": moment}))
    assert 'datetime="2025-03-01T12:30:00Z"' in rendered
    assert 'title="2025-03-01 12:30:00 UTC"' in rendered and "13:30 <small>CET</small>" in rendered
    client = client_for(fresh(company.bob))
    client.cookies["steward_tz"] = "America/New_York"
    page = client.get(reverse("inbox:index"))
    assert page.status_code == 200
    client.cookies["steward_tz"] = "../../etc/passwd"
    assert client.get(reverse("inbox:index")).status_code == 200


def test_the_vendored_htmx_is_served_with_its_licence():
    from django.contrib.staticfiles import finders

    assert finders.find("vendor/htmx/htmx.min.js")
    assert "Zero-Clause BSD" in Path(finders.find("vendor/htmx/LICENSE")).read_text()
