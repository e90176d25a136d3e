import uuid
from django.db import connection
from django.test.utils import CaptureQueriesContext
from tests.orchestrator.api_world import world  # noqa: F401
from django.core.cache import cache

def test_print(world, transactional_db):
    client = world.client("integration")
    client.post("/api/v1/runs", {"workflow": "payments", "input": {"order": 1}, "business_key": "X0"}, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))
    client = world.client("integration")
    with CaptureQueriesContext(connection) as ctx:
        r = client.post("/api/v1/runs", {"workflow": "payments", "input": {"order": 7}, "business_key": "X1"}, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))
    assert r.status_code == 201, r.content
    with open("/tmp/scratch/start.sql", "w") as f:
        for q in ctx.captured_queries:
            f.write(q["sql"][:400] + "\n")
    run_id = r.json()["id"]
    client = world.client("integration")
    with CaptureQueriesContext(connection) as ctx:
        r = client.post(f"/api/v1/runs/{world.running.pk}/signals", {"name": "go", "payload": {}}, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))
    with open("/tmp/scratch/signal.sql", "w") as f:
        f.write(str(r.status_code) + r.content.decode()[:300] + "\n")
        for q in ctx.captured_queries:
            f.write(q["sql"][:400] + "\n")
