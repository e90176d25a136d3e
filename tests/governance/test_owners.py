"""Accountable owners: an agent or integration keeps one, and every new role names one."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from audit.actors import SYSTEM
from governance import services
from governance.actions.common import save_governed
from governance.models import Principal, Role
from tests.governance.admin_forms import change_form_data
from tests.governance.conftest import fresh


def admin_client(user) -> Client:
    client = Client()
    client.force_login(fresh(user))
    return client


def test_an_agent_principal_cannot_lose_its_owner_in_the_admin(company):
    principal = company.agent.principal
    url = reverse("admin:governance_principal_change", args=[principal.pk])
    client = admin_client(company.gina)
    data = change_form_data(client.get(url))
    data.update({"owner": "", "change_reason": "nobody owns it any more"})
    response = client.post(url, data)
    assert response.status_code == 200  # the form again, with the error
    assert "must keep an accountable owner" in response.content.decode()
    principal.refresh_from_db()
    assert principal.owner == company.maya
    data.update({"owner": str(company.gina.pk), "change_reason": "gina takes it over"})
    assert client.post(url, data).status_code == 302
    principal.refresh_from_db()
    assert (principal.owner, principal.owner_name) == (company.gina, "gina")


def test_no_write_path_leaves_an_agent_or_integration_without_owner(company):
    for user in (company.agent, company.integration):
        principal = Principal.objects.get(user=user)
        principal.owner = None
        with pytest.raises(ValidationError) as caught:
            save_governed(principal, actor=SYSTEM, reason="clearing")
        assert "owner" in caught.value.message_dict
    with pytest.raises(services.GovernanceError):
        services.set_owner(company.agent.principal, None, actor=SYSTEM, reason="clearing")
    person = company.alice.principal
    person.description = "approver"
    save_governed(person, actor=SYSTEM, reason="people own themselves")  # no owner needed


def test_a_new_role_needs_an_accountable_person(company):
    with pytest.raises(services.GovernanceError) as missing:
        services.create_role(name="Auditors", actor=SYSTEM)
    assert missing.value.code == "owner_required"
    with pytest.raises(services.GovernanceError) as agent:
        services.create_role(name="Auditors", owner=company.agent, actor=SYSTEM)
    assert agent.value.code == "owner_not_a_person"
    assert not Role.objects.filter(name="Auditors").exists()
    role = services.create_role(name="Auditors", owner=company.gina, actor=SYSTEM)
    assert (role.owner, role.owner_name) == (company.gina, "gina")
    with pytest.raises(services.GovernanceError):
        services.update_role(role, actor=SYSTEM, reason="drop the owner", owner=None)
    role.refresh_from_db()
    assert role.owner == company.gina


def test_the_role_form_requires_an_owner(company):
    client = admin_client(company.gina)
    url = reverse("admin:governance_role_add")
    data = {"name": "Auditors", "description": "", "change_reason": "new team"}
    response = client.post(url, data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["owner"]
    assert not Role.objects.filter(name="Auditors").exists()
    response = client.post(url, {**data, "owner": str(company.gina.pk)})
    assert response.status_code == 302
    assert Role.objects.get(name="Auditors").owner == company.gina
