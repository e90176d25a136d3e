import cProfile, pstats, time, uuid
from tests.orchestrator.api_world import world  # noqa: F401
from orchestrator import services
from orchestrator.models import Workflow

def test_profile(world, transactional_db):
    client = world.client("integration")
    for i in range(5):
        client.post("/api/v1/runs", {"workflow": "payments", "input": {"order": i}, "business_key": f"W{i}"}, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))
    n = 60
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    for i in range(n):
        c = world.client("integration")
        r = c.post("/api/v1/runs", {"workflow": "payments", "input": {"order": i}, "business_key": f"P{i}"}, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))
        assert r.status_code == 201
    prof.disable()
    http = (time.perf_counter() - t) / n
    wf = Workflow.objects.get(slug="payments")
    user = world.user("integration")
    t = time.perf_counter()
    for i in range(n):
        services.start_run(wf, input={"order": i}, started_by=user, business_key=f"D{i}")
    direct = (time.perf_counter() - t) / n
    with open("/tmp/scratch/profile.txt", "w") as f:
        f.write(f"http {http*1000:.2f} ms direct {direct*1000:.2f} ms\n")
        st = pstats.Stats(prof, stream=f)
        st.sort_stats("cumulative").print_stats(90)
