"""API tokens and the API's door: bearer tokens, sessions with CSRF, problems, request ids."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services
from governance.models import ApiToken, Principal, PrincipalKind
from orchestrator.models import WorkflowRun
from tests.governance.conftest import fresh

pytestmark = pytest.mark.django_db

ME = "/api/v1/me"


@pytest.fixture
def issuer(company):
    """gina, a governance admin who may issue and revoke tokens."""
    for action in ("view", "add", "change"):
        services.grant(company.admins, f"governance.{action}_apitoken", actor=SYSTEM)
    return fresh(company.gina)


@pytest.fixture
def issued(company, issuer):
    """A token for the ERP integration, and its text."""
    return services.issue_token(company.integration, actor=issuer, name="ERP sync")


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"].startswith("https://")
    assert body["instance"] and body["request_id"] == response["X-Request-ID"]
    return body


def _refused_uses(row: ApiToken) -> list[str]:
    entries = AuditEntry.objects.filter(action="governance.api_token.refused", target_id=row.pk)
    return [entry.body_row.content for entry in entries]


def test_a_token_is_shown_once_and_stored_only_as_a_keyed_hash(issued):
    row, token = issued
    assert token.startswith("stw_") and token.startswith(row.prefix + "_")
    stored = ApiToken.objects.filter(pk=row.pk).values().get()
    assert all(token not in str(value) for value in stored.values())
    assert row.digest != token and len(row.digest) == 64
    issued_entry = AuditEntry.objects.get(action="governance.api_token.issued", target_id=row.pk)
    assert (
        token not in issued_entry.body_row.content and row.prefix in issued_entry.body_row.content
    )


def test_the_integration_calls_the_api_with_its_token(issued):
    row, token = issued
    response = bearer(token).get(ME, HTTP_X_REQUEST_ID="alertmanager-42")
    assert response.status_code == 200
    assert response["X-Request-ID"] == "alertmanager-42"
    body = response.json()
    assert body["username"] == "erp-sync" and body["kind"] == "integration"
    assert body["accountable_owner"] == "maya" and body["roles"] == ["Integrations"]
    assert body["token"]["prefix"] == row.prefix and "digest" not in body["token"]


def test_a_wrong_secret_is_refused_and_audited_under_the_prefix(issued):
    row, token = issued
    body = _problem(bearer(row.prefix + "_" + "x" * 43).get(ME), 401)
    assert "Unknown or revoked" in body["detail"]
    refused = _refused_uses(row)
    assert len(refused) == 1 and "wrong secret" in refused[0]
    assert token not in refused[0]


def test_an_unknown_or_malformed_token_is_refused_without_an_audit_entry(issued):
    before = AuditEntry.objects.count()
    _problem(bearer("stw_nosuchtoken_" + "y" * 43).get(ME), 401)
    _problem(bearer("not-a-token").get(ME), 401)
    assert AuditEntry.objects.count() == before


def test_a_revoked_token_stops_working_at_once(company, issuer, issued):
    row, token = issued
    assert bearer(token).get(ME).status_code == 200
    services.revoke_token(row, actor=issuer, reason="leaked in a build log")
    _problem(bearer(token).get(ME), 401)
    assert "revoked" in _refused_uses(row)[0]
    with pytest.raises(services.GovernanceError):
        services.revoke_token(
            ApiToken.objects.get(
                pk=services.issue_token(company.integration, actor=issuer, name="b")[0].pk
            ),
            actor=issuer,
            reason=" ",
        )


def test_an_expired_token_is_refused(company, issuer):
    with clock.frozen() as frozen:
        row, token = services.issue_token(
            company.integration,
            actor=issuer,
            name="short-lived",
            expires_at=clock.now() + dt.timedelta(hours=1),
        )
        assert bearer(token).get(ME).status_code == 200
        frozen.advance(3601)
        body = _problem(bearer(token).get(ME), 401)
    assert "expired" in body["detail"]
    assert "expired" in _refused_uses(row)[0]


def test_last_use_is_recorded_at_most_once_a_minute(issued):
    row, token = issued
    with clock.frozen() as frozen:
        bearer(token).get(ME)
        first = ApiToken.objects.get(pk=row.pk).last_used_at
        assert first == clock.now()
        frozen.advance(30)
        bearer(token).get(ME)
        assert ApiToken.objects.get(pk=row.pk).last_used_at == first
        frozen.advance(31)
        bearer(token).get(ME)
        assert ApiToken.objects.get(pk=row.pk).last_used_at == clock.now()


def test_a_read_only_token_reads_but_never_writes(company, issuer):
    row, token = services.issue_token(
        company.integration, actor=issuer, name="dashboards", read_only=True
    )
    assert bearer(token).get(ME).status_code == 200
    body = _problem(bearer(token).post(ME, {}, format="json"), 403)
    assert "read-only" in body["detail"]
    denied = AuditEntry.objects.get(action="governance.access_denied", target_id=row.pk)
    assert "read-only token" in denied.body_row.content
    assert denied.request_id == body["request_id"]
    # A writing token reaches the method check instead.
    _, writer = services.issue_token(company.integration, actor=issuer, name="writer")
    _problem(bearer(writer).post(ME, {}, format="json"), 405)


def test_basic_auth_is_not_accepted(company):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic Z2luYTpwdy1naW5hLTEyMw==")  # gina:pw-gina-123
    _problem(client.get(ME), 401)


def test_a_person_uses_the_api_with_the_session_and_csrf_is_enforced(company):
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="alice", password="pw-alice-123")
    response = client.get(ME)
    assert response.status_code == 200 and response.json()["token"] is None
    body = _problem(client.post(ME, {}), 403)
    assert "CSRF" in body["detail"]


def test_no_token_is_a_401_naming_the_scheme():
    response = APIClient().get(ME)
    _problem(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_unknown_api_address_is_a_problem_not_a_page(issued):
    _problem(bearer(issued[1]).get("/api/v1/no-such-thing"), 404)


def test_a_body_that_is_not_json_is_415_and_starts_nothing(issued):
    runs = WorkflowRun.objects.count()
    response = bearer(issued[1]).post(
        "/api/v1/runs", "workflow=payments", content_type="application/x-www-form-urlencoded"
    )
    assert "application/x-www-form-urlencoded" in _problem(response, 415)["detail"]
    assert WorkflowRun.objects.count() == runs


def test_requests_beyond_the_tokens_rate_are_429_with_retry_after(issued, settings):
    settings.STEWARD_API_RATE = "2/min"
    client = bearer(issued[1])
    assert [client.get(ME).status_code for _ in range(2)] == [200, 200]
    response = client.get(ME)
    body = _problem(response, 429)
    assert int(response["Retry-After"]) > 0 and body["retry_after"] > 0


def test_who_may_issue_tokens(company, issuer):
    with pytest.raises(services.AccessDenied):
        services.issue_token(company.integration, actor=fresh(company.oscar), name="mine")
    assert AuditEntry.objects.filter(action="governance.access_denied").exists()
    with pytest.raises(services.GovernanceError, match="Agents act only through the engine"):
        services.issue_token(company.agent, actor=issuer, name="agent")
    with pytest.raises(services.GovernanceError, match="future"):
        services.issue_token(
            company.integration,
            actor=issuer,
            name="past",
            expires_at=clock.now() - dt.timedelta(seconds=1),
        )
    assert not ApiToken.objects.exists()


def test_an_agent_never_holds_a_token_by_any_door(company, issuer):
    with pytest.raises(services.GovernanceError) as caught:
        services.issue_token(company.agent, actor=issuer, name="agent")
    assert caught.value.code == "agent_token"
    with pytest.raises(CommandError, match="an agent cannot have an API token"):
        call_command(
            "api_tokens", "issue", "--as", "gina", "--for", "payments-agent", "--name", "x"
        )
    client = Client()
    client.force_login(issuer)
    page = client.post(
        "/admin/governance/apitoken/add/",
        {"user": company.agent.pk, "name": "agent", "expires_at_0": "", "expires_at_1": ""},
    )
    assert page.status_code == 200
    assert "an agent cannot have an API token" in page.content.decode()
    assert not ApiToken.objects.exists()


def test_a_token_whose_principal_became_an_agent_no_longer_authenticates(company, issued):
    row, token = issued
    assert bearer(token).get(ME).status_code == 200
    Principal.objects.filter(user=company.integration).update(kind=PrincipalKind.AGENT)
    body = _problem(bearer(token).get(ME), 401)
    assert "Agents cannot use API tokens" in body["detail"]
    assert any("agent principal" in content for content in _refused_uses(row))


def test_a_person_sees_and_revokes_only_their_own_tokens(company, issuer, issued):
    row, _ = issued
    assert list(ApiToken.objects.restrict(fresh(company.oscar), "view")) == []
    assert list(ApiToken.objects.restrict(issuer, "view")) == [row]
    with pytest.raises(services.NotVisible):
        services.revoke_token(row, actor=fresh(company.oscar), reason="mischief")


def test_the_command_issues_lists_and_revokes(company, issuer):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "api_tokens",
        "issue",
        "--as",
        "gina",
        "--for",
        "erp-sync",
        "--name",
        "ERP",
        "--read-only",
        stdout=out,
        stderr=err,
    )
    token = out.getvalue().strip()
    row = ApiToken.objects.get()
    assert token.startswith(row.prefix + "_") and row.read_only
    assert bearer(token).get(ME).status_code == 200
    listing = io.StringIO()
    call_command("api_tokens", "list", "--as", "gina", stdout=listing)
    assert row.prefix in listing.getvalue() and token not in listing.getvalue()
    call_command(
        "api_tokens",
        "revoke",
        row.prefix,
        "--as",
        "gina",
        "--reason",
        "rotated",
        stdout=io.StringIO(),
    )
    _problem(bearer(token).get(ME), 401)
    with pytest.raises(CommandError, match="Forbidden|Not found"):
        call_command("api_tokens", "issue", "--as", "oscar", "--for", "erp-sync", "--name", "x")


def test_the_admin_issues_a_token_and_shows_it_once(company, issuer):
    client = Client()
    client.force_login(issuer)
    response = client.post(
        "/admin/governance/apitoken/add/",
        {
            "user": company.integration.pk,
            "name": "From the admin",
            "expires_at_0": "",
            "expires_at_1": "",
        },
        follow=True,
    )
    assert response.status_code == 200
    row = ApiToken.objects.get()
    shown = [str(m) for m in response.context["messages"]]
    token = next(m for m in shown if row.prefix in m).rsplit(" ", 1)[1]
    assert bearer(token).get(ME).status_code == 200
    page = client.get(f"/admin/governance/apitoken/{row.pk}/change/")
    assert token not in page.content.decode()


def test_the_schema_and_its_viewers_are_served_offline(issued):
    client = bearer(issued[1])
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/v1/me" in schema.json()["paths"]
    for page in ("/api/v1/docs/", "/api/v1/redoc/"):
        html = client.get(page).content.decode()
        assert "drf_spectacular_sidecar" in html and "cdn.jsdelivr" not in html


def test_every_issued_token_authenticates_whatever_its_secret_holds(company, issuer):
    # URL-safe secrets contain "_" and "-": a parser that split on the last "_" lost some.
    for index in range(40):
        row, token = services.issue_token(company.integration, actor=issuer, name=f"t{index}")
        assert services.authenticate_token(token).pk == row.pk
