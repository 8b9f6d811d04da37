"""Which Redis failures pass by themselves, so that a write worth keeping (a reply's save, its stream's
events) is tried again rather than given up: the server unreachable or restarting (connection errors,
LOADING), a Cluster healing or failing over (CLUSTERDOWN, TRYAGAIN, MASTERDOWN) and a Sentinel master
demoted mid-command (READONLY). Anything else is a refusal that waiting would not mend (OOM under
noeviction, a wrong type)."""

from __future__ import annotations

from redis.exceptions import ClusterDownError, ReadOnlyError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

PASSING = (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError, ReadOnlyError)
