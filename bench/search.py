"""Search over 10,000 conversations: the inverted index (webapp/search.py) against the old scan.

Seeds one user with N conversations (default 10,000) of a few messages each, English and
Chinese, in a real redis-server (the embedded one, unix socket), each written and indexed
as an import writes it (one MULTI). Then times the app's search, as the sidebar calls it
(terms -> one MULTI intersecting the sets with the session index -> the matching
conversations' metadata), for queries that match many, few, one or no conversations, a
prefix being typed, Chinese bigrams; and, for comparison, the scan the app used before
(newest 2,000 conversations only).

    python -m bench.search [--conversations 10000] [--repeat 50]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import git_revision, on_embedded_redis, results_file  # noqa: E402
from webapp.base.models import WELCOME, Conversation, Message, new_id, new_message_id, now_iso  # noqa: E402
from webapp.config import Settings  # noqa: E402
from webapp.core.search import SearchIndex, terms_of  # noqa: E402
from webapp.storage.redis_client import create_single_redis  # noqa: E402
from webapp.storage.store import Store  # noqa: E402

USER = "u_benchsearch0000000000"
WORDS = ("python redis stream reply model context window token latency memory cluster slot index "
         "search title role prompt export import share link browser server client cache queue worker "
         "deploy docker compose proxy nginx certificate database schema query vector embedding").split()
CHINESE = ["人工智能", "机器学习", "数据库", "多轮对话", "上下文", "流式输出", "部署上线", "性能优化", "缓存", "搜索引擎"]
LIMIT = 30


def sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(8, 20))
    if rng.random() < 0.4:
        words.insert(rng.randrange(len(words)), rng.choice(CHINESE))
    return " ".join(words)


async def seed(store: Store, count: int, rng: random.Random) -> list[str]:
    now = time.time() - count
    ids = []
    for n in range(count):
        conversation = Conversation(id=new_id(), user_id=USER, title=f"{rng.choice(WORDS)} {rng.choice(WORDS)} {n}",
                                    preview="", role="assistant", message_count=0, created=now + n, updated=now + n)
        messages = [Message(id=new_message_id(), role="assistant", content="你好！", ts=now_iso(), kind=WELCOME)]
        for turn in range(rng.randint(1, 3)):
            messages.append(Message(id=new_message_id(), role="user", content=sentence(rng), ts=now_iso()))
            messages.append(Message(id=new_message_id(), role="assistant", content=sentence(rng), ts=now_iso()))
        if n == 17:  # one needle, in the oldest part of the history (the old scan never reached it)
            messages.append(Message(id=new_message_id(), role="user", content="the zanzibar question", ts=now_iso()))
        conversation.message_count = len(messages)
        terms = terms_of(conversation.title)
        for message in messages[1:]:
            terms |= terms_of(message.content)
        await store.import_conversation(conversation, messages, terms)
        ids.append(conversation.id)
    await store.mark_search_index_ready(USER)
    return ids


async def timed(call, repeat: int) -> tuple[list[float], int]:  # type: ignore[no-untyped-def]
    found = await call()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples, len(found)


async def measure(url: str, count: int, repeat: int) -> list[dict[str, object]]:
    redis = create_single_redis(Settings(redis_url=url, secret_key="x" * 20), bounded=True)
    store = Store(redis, conversation_ttl=86400 * 7, index_ttl=86400 * 30, turn_timeout=600)
    index = SearchIndex(store)
    rng = random.Random(18)
    started = time.perf_counter()
    await seed(store, count, rng)
    print(f"seeded {count} conversations (written and indexed) in {time.perf_counter() - started:.1f} s")
    queries = [
        ("one common word", "python"),
        ("two common words", "redis stream"),
        ("a prefix being typed", "clust"),
        ("Chinese (bigrams)", "机器学习"),
        ("the one oldest conversation", "zanzibar"),
        ("no match", "nonexistentword"),
        ("a title's number", "4242"),
    ]
    rows: list[dict[str, object]] = []
    for label, query in queries:
        samples, found = await timed(lambda: index.search(USER, query, limit=LIMIT), repeat)
        rows.append({"search": "index", "query": label, "q": query, "found": found,
                     "median_ms": statistics.median(samples), "p95_ms": sorted(samples)[int(len(samples) * .95) - 1]})
    for label, query in (("the old scan: no match", "nonexistentword"), ("the old scan: oldest", "zanzibar")):
        samples, found = await timed(lambda: store.search_conversations(USER, query, limit=LIMIT), max(3, repeat // 10))
        rows.append({"search": "scan (before)", "query": label, "q": query, "found": found,
                     "median_ms": statistics.median(samples), "p95_ms": max(samples)})
    info = await redis.info("memory")
    rows.append({"search": "memory", "query": "used_memory_human", "q": "", "found": 0,
                 "median_ms": 0, "p95_ms": 0, "memory": info.get("used_memory_human")})
    await redis.aclose()
    return rows


def render(rows: list[dict[str, object]], count: int) -> str:
    lines = [f"search over {count} conversations of one user (found: at most {LIMIT} shown)", "",
             f"{'search':<14} {'query':<30} {'found':>6} {'median ms':>10} {'p95 ms':>8}"]
    for row in rows:
        if row["search"] == "memory":
            lines.append(f"\nRedis used_memory with the index: {row['memory']}")
            continue
        lines.append(f"{row['search']:<14} {row['query']:<30} {row['found']:>6} {row['median_ms']:>10.2f} "
                     f"{row['p95_ms']:>8.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    rows = on_embedded_redis("search", lambda url: measure(url, args.conversations, args.repeat))
    print(render(rows, args.conversations))
    output = results_file("search", args.output)
    output.write_text(json.dumps({"revision": git_revision(), "conversations": args.conversations,
                                  "rows": rows}, indent=2, default=str))
    print(f"results: {output}")


if __name__ == "__main__":
    main()
