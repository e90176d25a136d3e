"""Django's cache shares one Redis connection pool across threads (orchestrator/cache.py)."""

import threading

import pytest
from django.core.cache import cache, caches

pytestmark = pytest.mark.redis


def test_every_thread_uses_the_same_pool_and_one_connection_at_a_time(settings):
    if "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        pytest.skip("the cache is not Redis here")
    cache.set("pool-check", 1, 30)
    pools = []

    def request_like_thread() -> None:
        # A thread of its own, as Django's ASGI handler gives each request: a new cache object.
        own = caches["default"]
        assert own.get("pool-check") == 1
        pools.append(own._cache._get_connection_pool(write=False))

    for _ in range(10):
        thread = threading.Thread(target=request_like_thread)
        thread.start()
        thread.join()

    first = pools[0]
    assert all(pool is first for pool in pools)
    # Sequential threads reused one connection rather than opening ten.
    assert len(first._available_connections) + len(first._in_use_connections) == 1
