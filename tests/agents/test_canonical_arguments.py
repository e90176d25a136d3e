"""Policies decide on canonical arguments: no spelling of a service or its hosts evades a rule.

The demo's "Production restarts need an incident commander" rule used to match the service's
name as the model spelled it, and the restart tool restarted whatever hosts it was given. Now
the demo tools resolve their arguments against the service catalogue before anything decides:
the policy, the approval (and its digest), the records and the call all see the canonical
arguments. The reported cases are checked one by one; then a generated family of spellings
(case, surrounding and zero-width characters, look-alike letters from other scripts and
compatibility forms, host lists of other or several services, a forged environment) checks
that no variant acting on checkout or billing hosts runs without an incident commander.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import string
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import demo_tools, services
from agents import tools as registry
from agents.actions import enforcement
from agents.models import ToolInvocation, Verdict
from agents.tools import ArgumentsRefused, ToolContext, canonical_name
from audit import clock
from audit.models import AuditEntry
from governance import services as governance
from governance.actions.common import digest
from governance.models import ApprovalRequest
from orchestrator import demo, engine
from tests.agents.conftest import body_of, step_of

pytestmark = pytest.mark.django_db

RESTART = "incident.restart_service"
DEMO_TOOLS = [RESTART, "incident.scale_service", "incident.lookup_service"]
PRODUCTION = {
    name for name, entry in demo_tools.SERVICES.items() if entry["environment"] == "production"
}
PRODUCTION_HOSTS = {h for name in PRODUCTION for h in demo_tools.SERVICES[name]["hosts"]}
HOSTS = sorted(demo_tools.service_of_host())
keys = (f"canonical-test:{n}" for n in itertools.count())


@pytest.fixture
def frozen():
    """Freeze the injectable clock, so a retry's backoff passes without sleeping."""
    with clock.frozen(seed=11) as frozen:
        yield frozen


@pytest.fixture
def executed(monkeypatch) -> list[dict]:
    """Record the arguments every restart actually runs with (the tool itself still runs)."""
    calls: list[dict] = []
    spec = registry.get_tool(RESTART)

    def spy(arguments, context):
        calls.append(json.loads(json.dumps(arguments)))
        return spec.func(arguments, context)

    monkeypatch.setitem(registry._registry, RESTART, dataclasses.replace(spec, func=spy))
    return calls


@pytest.fixture
def remediator(world, make_agent):
    """The demo's policies (under the test approvers) and an agent holding the demo tools."""
    governance.create_approval_rule(
        slug=demo.APPROVAL_RULE, name="Incident commander", role=world.approvers, sla_seconds=3600
    )
    demo.ensure_policies(None)
    return make_agent("remediator", [], tools=DEMO_TOOLS)


def decide(agent, arguments, tool=RESTART):
    """Take the enforcement point's verdict on one proposed call (outside any run)."""
    return enforcement.decide_tool_call(
        agent.pk, tool, arguments, enforcement.CallSite(key=next(keys))
    )


def execute(agent, arguments, verdict, key, tool=RESTART):
    """Run an admitted call as an agent step's second attempt would (restarts fail the first)."""
    context = ToolContext(idempotency_key=key, attempt=2, agent_id=agent.pk)
    return enforcement.execute_tool_call(
        agent.pk, tool, arguments, verdict, context, invocation_key=key
    )


CHECKOUT_2 = {"service": "checkout", "hosts": ["checkout-2"], "environment": "production"}
REPORTED = [
    # (proposed arguments, verdict, what the decision covers or why it is refused)
    ({"service": "search", "hosts": ["checkout-2"]}, "deny", "belong to checkout, not to search"),
    ({"service": "Checkout", "hosts": ["checkout-2"]}, "approval", CHECKOUT_2),
    ({"service": "checkout ", "hosts": ["checkout-2"]}, "approval", CHECKOUT_2),
    ({"service": "\u0441heckout", "hosts": ["checkout-2"]}, "deny", "CYRILLIC SMALL LETTER ES"),
    ({"service": "checkout", "hosts": ["checkout-9"]}, "deny", "no host is called checkout-9"),
    (
        {"service": "checkout", "hosts": ["checkout-1", "billing-1"]},
        "deny",
        "billing-1 belong to billing, not to checkout",
    ),
    ({"service": "check\u200bout", "hosts": ["checkout-2"]}, "deny", "ZERO WIDTH SPACE"),
    (
        {"service": "checkout", "hosts": ["checkout-2"], "environment": "staging"},
        "deny",
        "checkout runs in production, not staging",
    ),
    (
        {"service": "BILLING", "hosts": [" billing-1", "Billing-1"]},
        "approval",
        {"service": "billing", "hosts": ["billing-1"], "environment": "production"},
    ),
]


@pytest.mark.parametrize(("arguments", "expected", "detail"), REPORTED)
def test_each_reported_spelling_needs_an_approval_or_is_refused(
    remediator, arguments, expected, detail
):
    verdict = decide(remediator, arguments)
    invocation = ToolInvocation.objects.latest("pk")
    assert verdict.verdict == expected, verdict
    if expected == "deny":
        assert verdict.stage == "arguments" and detail in verdict.reason
        assert invocation.arguments == arguments  # nothing was resolved: kept as proposed
        return
    request = ApprovalRequest.objects.get(pk=verdict.approval_request)
    assert request.action == f"tool.{RESTART}" and verdict.policy["rule_name"].startswith(
        "Production restarts"
    )
    assert request.arguments == detail == verdict.arguments == invocation.arguments
    assert request.arguments_digest == digest(detail) == verdict.arguments_digest
    assert invocation.proposed_arguments == arguments  # the evidence of what was proposed


def test_a_staging_restart_still_runs_without_approval(remediator, executed):
    """The rule is not simply 'every restart': the catalogue says search is staging."""
    arguments = {"service": " Search", "hosts": ["search-2", "SEARCH-1"]}
    verdict = decide(remediator, arguments)
    assert verdict.verdict == Verdict.ALLOW, verdict
    outcome = execute(remediator, arguments, verdict, ToolInvocation.objects.latest("pk").key)
    canonical = {"service": "search", "hosts": ["search-1", "search-2"], "environment": "staging"}
    assert executed == [canonical]
    assert outcome == {"ok": True, "result": {"service": "search", "restarted": canonical["hosts"]}}


def test_what_is_approved_is_exactly_what_runs(remediator, run_agent, world, executed, frozen):
    proposed = {"service": " Checkout", "hosts": ["CHECKOUT-2", "checkout-2 "]}
    rules = [
        {"when": "turn == 1", "tool_calls": [{"tool": RESTART, "arguments": proposed}]},
        {"final": {"outcome": "{{ results[0] }}"}, "confidence": 1},
    ]
    services.update_agent(remediator, actor=None, reason="restart", script={"rules": rules})
    run = run_agent("remediator", {})
    request = ApprovalRequest.objects.get(status="pending")
    assert step_of(run).status == "waiting"
    assert request.arguments == CHECKOUT_2
    assert request.arguments_digest == digest(CHECKOUT_2)
    assert CHECKOUT_2["environment"] in request.summary  # the person sees what will run
    decided = AuditEntry.objects.get(action="agents.tool.decided", run_id=run.pk)
    assert body_of(decided)["arguments"] == CHECKOUT_2
    assert body_of(decided)["proposed_arguments"] == proposed
    policy = AuditEntry.objects.get(action="governance.policy.decided", run_id=run.pk)
    assert body_of(policy)["context"]["arguments"] == CHECKOUT_2

    governance.decide_approval(request, user=world.alice, decision="approve")
    engine.drain()
    frozen.advance(5)  # the restart fails its first attempt; its retry is due after backoff
    engine.sweep()
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert executed == [CHECKOUT_2, CHECKOUT_2]  # both attempts, with exactly what was approved
    called = AuditEntry.objects.get(action="agents.tool.called", run_id=run.pk)
    assert body_of(called)["arguments"] == CHECKOUT_2
    assert body_of(called)["arguments_digest"] == request.arguments_digest
    outcome = step_of(run).output["result"]["outcome"]
    assert outcome["result"] == {"service": "checkout", "restarted": ["checkout-2"]}


def test_a_call_whose_arguments_resolve_otherwise_by_then_does_not_run(
    remediator, executed, monkeypatch
):
    arguments = {"service": "search", "hosts": ["search-1"]}
    verdict = decide(remediator, arguments)
    assert verdict.verdict == Verdict.ALLOW
    # Search moves to production between the decision and the call: the decision is stale.
    moved = {**demo_tools.SERVICES["search"], "environment": "production"}
    monkeypatch.setitem(demo_tools.SERVICES, "search", moved)
    with pytest.raises(ArgumentsRefused, match="propose it again"):
        execute(remediator, arguments, verdict, ToolInvocation.objects.latest("pk").key)
    assert executed == []


def test_a_resolver_must_give_schema_valid_arguments_that_resolve_to_themselves():
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "maximum": 10}},
        "required": ["n"],
    }
    context = ToolContext(idempotency_key="k")

    @registry.tool("test.canonical_drifts", schema=schema, canonical=lambda a, c: {"n": a["n"] + 1})
    def drifts(arguments, context):
        """Resolves to something that resolves further (a broken resolver)."""
        raise AssertionError("a call whose resolution is unstable must never run")

    @registry.tool("test.canonical_invalid", schema=schema, canonical=lambda a, c: {"n": "ten"})
    def invalid(arguments, context):
        """Resolves to arguments its schema refuses (a broken resolver)."""
        raise AssertionError("a call resolved outside its schema must never run")

    with pytest.raises(ArgumentsRefused, match="stably"):
        registry.get_tool("test.canonical_drifts").call({"n": 1}, context)
    with pytest.raises(ArgumentsRefused, match="invalid form"):
        registry.get_tool("test.canonical_invalid").call({"n": 1}, context)


@pytest.mark.parametrize(
    ("spelled", "canonical"),
    [
        ("checkout", "checkout"),
        ("  CheckOut\t", "checkout"),
        ("\u00a0checkout\u3000", "checkout"),
        ("\uff43\uff48\uff45\uff43\uff4b\uff4f\uff55\uff54", "checkout"),  # fullwidth
        ("\u212a8s", "k8s"),  # the Kelvin sign is a compatibility form of K
    ],
)
def test_canonical_name_folds_case_spaces_and_compatibility_forms(spelled, canonical):
    assert canonical_name(spelled, "service") == canonical


@pytest.mark.parametrize(
    ("spelled", "named"),
    [
        ("\u0441heckout", "CYRILLIC SMALL LETTER ES"),
        ("checkοut", "GREEK SMALL LETTER OMICRON"),
        ("check\u200dout", "ZERO WIDTH JOINER"),
        ("check out", "SPACE"),
        ("checkout\x00", "a control or unassigned character"),
        ("bıllıng", "LATIN SMALL LETTER DOTLESS I"),
        ("\u200b", "ZERO WIDTH SPACE"),
        ("   ", "empty"),
    ],
)
def test_canonical_name_refuses_what_it_would_have_to_guess(spelled, named):
    with pytest.raises(ArgumentsRefused, match=named):
        canonical_name(spelled, "service")


# --- the generated family -----------------------------------------------------------------------

# Look-alikes of the letters in the catalogue's names, from other scripts and symbol blocks.
LOOKALIKES = {
    "a": "\u0430\u03b1\u0251",
    "b": "\u0184\u13cf",
    "c": "\u0441\u03f2\u217d",
    "e": "\u0435\u03b5\u0117",
    "g": "\u0261\u0581",
    "h": "\u04bb\u0570",
    "i": "\u0456\u0131\u00ed",
    "k": "\u03ba\u043a",
    "l": "\u04cf\u0399\u2113",
    "n": "\u0578\u03b7",
    "o": "\u043e\u03bf\u0585\u0030",
    "r": "\u0433\u027e",
    "s": "\u0455\u0282",
    "t": "\u03c4\u0442",
    "u": "\u03c5\u057d\u00fc",
    "-": "\u2010\u2011\u2212\u2013",
    "1": "\u04cf\u0031\u0661",
    "2": "\u01bb\u0662",
    "3": "\u0417\u0663",
}
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
SPACES = " \t\n\u00a0\u2003\u3000"


def _compatible(char: str) -> str:
    """Return a compatibility form that NFKC folds back to the ASCII character."""
    if char in string.ascii_lowercase:
        return chr(0xFF41 + ord(char) - ord("a"))  # fullwidth
    if char in string.digits:
        return chr(0x1D7CE + ord(char) - ord("0"))  # mathematical bold digit
    return char


@st.composite
def spelled(draw, name: str) -> str:
    """Spell a catalogue name the ways a model might be told to (or tricked into)."""
    chars = list(name)
    if draw(st.booleans()):
        chars = [char.upper() if draw(st.booleans()) else char for char in chars]
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        at = draw(st.integers(min_value=0, max_value=len(chars) - 1))
        char = chars[at].lower()
        how = draw(st.sampled_from(["lookalike", "compatible", "zero-width"]))
        if how == "lookalike" and char in LOOKALIKES:
            chars[at] = draw(st.sampled_from(LOOKALIKES[char]))
        elif how == "compatible":
            chars[at] = _compatible(char)
        else:
            chars[at] = draw(st.sampled_from(ZERO_WIDTH)) + chars[at]
    before = draw(st.text(alphabet=SPACES, max_size=2))
    after = draw(st.text(alphabet=SPACES, max_size=2))
    return before + "".join(chars) + after


@st.composite
def restarts(draw):
    """A proposed restart: the hosts it means, the service it names, and how it spells them."""
    owner = draw(st.sampled_from(sorted(demo_tools.SERVICES)))
    own_hosts = st.sampled_from(demo_tools.SERVICES[owner]["hosts"])
    any_host = st.sampled_from(HOSTS)
    meant = draw(st.lists(st.one_of(own_hosts, own_hosts, any_host), min_size=1, max_size=4))
    named = draw(st.one_of(st.just(owner), st.sampled_from(sorted(demo_tools.SERVICES))))
    arguments = {
        "service": draw(spelled(named)),
        "hosts": [draw(spelled(host)) for host in meant],
    }
    if draw(st.booleans()) and draw(st.booleans()):
        arguments["environment"] = draw(spelled(draw(st.sampled_from(["staging", "production"]))))
    return arguments, meant, named


def test_no_spelling_of_a_production_restart_runs_without_approval(remediator, executed, world):
    seen: Counter = Counter()

    @settings(
        max_examples=100,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(restarts())
    def check(case):
        arguments, meant, named = case
        production = named in PRODUCTION or bool(PRODUCTION_HOSTS & set(meant))
        verdict = decide(remediator, arguments)
        seen[verdict.verdict] += 1
        key = ToolInvocation.objects.latest("pk").key
        if verdict.verdict == Verdict.DENY:
            assert verdict.stage in {"arguments", "policy"}, verdict
            return
        assert not (production and verdict.verdict == Verdict.ALLOW), (arguments, verdict)
        # What it decided on is the catalogue's: the meant hosts, once each, of the named service.
        decided = verdict.arguments
        assert decided["hosts"] == sorted(set(meant)) and decided["service"] == named, arguments
        assert verdict.arguments_digest == digest(decided)
        if verdict.verdict == Verdict.APPROVAL:
            request = ApprovalRequest.objects.get(pk=verdict.approval_request)
            assert request.arguments == decided and request.arguments_digest == digest(decided)
            governance.decide_approval(request, user=world.alice, decision="approve")
        executed.clear()
        outcome = execute(remediator, arguments, verdict, key)
        assert outcome["ok"] is True and outcome["result"]["restarted"] == decided["hosts"]
        assert executed == [decided]  # the call ran with exactly what was decided and approved

    check()
    # The family reaches every verdict: refused spellings, production approvals, staging runs.
    assert seen[Verdict.DENY] and seen[Verdict.APPROVAL] and seen[Verdict.ALLOW], seen
    print(f"restart spellings decided: {dict(seen)}")
