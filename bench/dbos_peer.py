"""The DBOS Transact peer of bench/engine.py: a workflow of ten @DBOS.step no-ops.

    python bench/dbos_peer.py --url postgresql://root@127.0.0.1:5432/steward_bench_dbos --id 0

A long-lived process (bench/engine.py starts two) that launches DBOS on its own PostgreSQL
system database, prints {"ready": true}, then answers one JSON command per stdin line with one
JSON line on stdout:

    {"cmd": "latency", "runs": 20}          -> {"seconds": [...]}   one run after another
    {"cmd": "throughput", "runs": 100, "start_at": <unix time>, "in_flight": 1}
                                            -> {"start": ..., "end": ...}
    {"cmd": "quit"}

A workflow runs where DBOS runs it, in the calling process (DBOS is a library: there is no
broker hop and no separate worker); each step is checkpointed in the system database, and the
workflow's status row is written at its start and end. Everything else DBOS logs goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from dbos import DBOS

STEPS = 10


@DBOS.step()
def noop(index: int) -> None:
    """Do nothing: one checkpointed step."""
    return None


@DBOS.workflow()
def ten_steps(steps: int) -> int:
    """Run `steps` no-op steps one after another."""
    for index in range(steps):
        noop(index)
    return steps


def latency(runs: int) -> dict:
    """Run workflows one after another; return each one's wall-clock seconds."""
    seconds = []
    for _ in range(runs):
        began = time.perf_counter()
        ten_steps(STEPS)
        seconds.append(time.perf_counter() - began)
    return {"seconds": seconds}


def throughput(runs: int, start_at: float, in_flight: int) -> dict:
    """Wait for `start_at`, then run `runs` workflows, `in_flight` at a time; return the times."""
    while time.time() < start_at:
        time.sleep(0.001)
    start = time.time()
    if in_flight <= 1:
        for _ in range(runs):
            ten_steps(STEPS)
    else:
        with ThreadPoolExecutor(in_flight) as pool:
            list(pool.map(ten_steps, [STEPS] * runs))
    return {"start": start, "end": time.time()}


def main() -> None:
    """Launch DBOS, then serve commands from stdin until told to quit or stdin closes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the DBOS system database")
    parser.add_argument("--id", default="0", help="this process's executor id")
    args = parser.parse_args()
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray output must not break the protocol
    DBOS(
        config={
            "name": "steward-bench-peer",
            "system_database_url": args.url,
            "executor_id": f"bench-{args.id}",
            "log_level": "WARNING",
            "sys_db_pool_size": 8,
        }
    )
    DBOS.launch()
    replies.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "latency":
            reply = latency(command["runs"])
        elif command["cmd"] == "throughput":
            reply = throughput(command["runs"], command["start_at"], command.get("in_flight", 1))
        elif command["cmd"] == "quit":
            break
        else:
            reply = {"error": f"unknown command {command['cmd']!r}"}
        replies.write(json.dumps(reply) + "\n")
    DBOS.destroy()


if __name__ == "__main__":
    main()
