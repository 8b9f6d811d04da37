"""The admin page at 10,000 users: a page of the directory (its index, then one pipeline for the 50 users'
figures) and its HTML, newest first, deep pages and a name search; never a SCAN of the keyspace.

Seeds N accounts (default 10,000) in a real redis-server (the embedded one, unix socket), as sign-ups
write them (the account, its name, the directory), a third of them with conversations and this month's
spending. Then times Admin.users (what /admin and /api/admin/users call) and the page's rendering.

    python -m bench.admin [--users 10000] [--repeat 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import git_revision, on_embedded_redis, results_file  # noqa: E402
from webapp.base.models import Usage  # noqa: E402
from webapp.config import Settings  # noqa: E402
from webapp.core.admin import Admin  # noqa: E402
from webapp.core.quota import StorageQuota  # noqa: E402
from webapp.core.spending import Spending  # noqa: E402
from webapp.storage.redis_client import create_single_redis  # noqa: E402
from webapp.storage.spending import utc_day  # noqa: E402
from webapp.storage.store import Store  # noqa: E402
from webapp.web.render import render_template  # noqa: E402



async def seed(store: Store, count: int, rng: random.Random) -> None:
    day = utc_day()
    for start in range(0, count, 500):
        batch = range(start, min(count, start + 500))
        await asyncio.gather(*(store.create_account(f"a_{n:024x}", f"user{n:05d}", "x") for n in batch))
        async with store.redis.pipeline(transaction=False) as pipe:
            for n in batch:
                if n % 3 == 0:
                    uid = f"a_{n:024x}"
                    pipe.zadd(store.keys.index(uid), {f"s{k}": time.time() * 1000 - rng.random() * 1e9 for k in range(3)})
                    store._count_spending(pipe, uid, day, "gpt-4o-mini", Usage(rng.randint(100, 9000), rng.randint(10, 900)))
            await pipe.execute()


async def timed(call, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    await call()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def measure(url: str, count: int, repeat: int) -> list[dict[str, object]]:
    settings = Settings(_env_file=None, redis_url=url, secret_key="x" * 20, auth="accounts",  # type: ignore[call-arg]
                        admin_users="user00000", token_budget_monthly=100_000)
    redis = create_single_redis(settings, bounded=True)
    store = Store(redis, conversation_ttl=86400 * 7, index_ttl=86400 * 30, turn_timeout=600)
    admin = Admin(store, settings, None, None, Spending(store, settings), StorageQuota(store, 0), None)  # type: ignore[arg-type]
    started = time.perf_counter()
    await seed(store, count, random.Random(36))
    print(f"seeded {count} accounts in {time.perf_counter() - started:.1f} s")
    pages = -(-count // 50)
    rows: list[dict[str, object]] = []
    for label, page, query in (("newest (page 1)", 1, ""), ("middle page", pages // 2, ""), ("last page", pages, ""),
                               ("search 'user012' (100 found)", 1, "user012"), ("search, no match", 1, "zzz")):
        data = await admin.users(page, query)
        samples = await timed(lambda: admin.users(page, query), repeat)

        async def page_html() -> None:
            found = await admin.users(page, query)
            render_template("admin.html", "en", users=found, audit=[], notice="", new_password="", password_for="",
                            csrf_token="t", auth_mode="accounts")

        with_html = await timed(page_html, repeat)
        rows.append({"page": label, "rows": len(data.rows), "total": data.total,
                     "median_ms": statistics.median(samples), "p95_ms": sorted(samples)[int(len(samples) * .95) - 1],
                     "with_html_median_ms": statistics.median(with_html),
                     "with_html_p95_ms": sorted(with_html)[int(len(with_html) * .95) - 1]})
    await redis.aclose()
    return rows


def render(rows: list[dict[str, object]], count: int) -> str:
    lines = [f"the admin directory at {count} users (50 a page)", "",
             f"{'page':<30} {'rows':>5} {'total':>6} {'median ms':>10} {'p95 ms':>8} {'+HTML med':>10} {'p95':>7}"]
    for row in rows:
        lines.append(f"{row['page']:<30} {row['rows']:>5} {row['total']:>6} {row['median_ms']:>10.2f} "
                     f"{row['p95_ms']:>8.2f} {row['with_html_median_ms']:>10.2f} {row['with_html_p95_ms']:>7.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    rows = on_embedded_redis("admin", lambda url: measure(url, args.users, args.repeat))
    print(render(rows, args.users))
    output = results_file("admin", args.output)
    output.write_text(json.dumps({"revision": git_revision(), "users": args.users, "rows": rows}, indent=2, default=str))
    print(f"results: {output}")


if __name__ == "__main__":
    main()
