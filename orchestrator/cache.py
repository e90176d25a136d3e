"""One Redis connection pool per process for Django's cache, shared by every thread.

Django makes a cache object per thread, and its Redis client a pool per cache object. Under
ASGI every request runs in a thread of its own (Django's ThreadSensitiveContext), so each request
built a new pool and paid for a new TCP connection (and a name lookup) to Redis for the API
throttle: 9 % of a start's time in the server (py-spy, bench/api.py). `SharedConnectionPool` is
the cache's `pool_class`: the same URL and options give the same pool, which redis-py makes safe
across threads and resets after a fork.
"""

from __future__ import annotations

import threading

import redis

_pools: dict[tuple, redis.ConnectionPool] = {}
_lock = threading.Lock()


class SharedConnectionPool(redis.ConnectionPool):
    """A redis-py connection pool that `from_url` hands out once per URL and options."""

    @classmethod
    def from_url(cls, url: str, **options) -> redis.ConnectionPool:
        """Return this process's pool for `url` and `options`, made on first use."""
        key = (url, tuple(sorted((name, repr(value)) for name, value in options.items())))
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = super().from_url(url, **options)
            return pool
