"""Dedupe: an event id is claimed in Redis before the insert, confirmed after it and
released when the insert fails, so a batch is stored once however often and however
concurrently it is sent, and a retry after a failure is not lost as a duplicate."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from headwater.gateway._dedupe import (
    ALIVE_SECONDS,
    BUCKETS,
    Claim,
    Coalescer,
    DedupeStore,
    MemoryDedupeStore,
    RedisDedupeStore,
)
from headwater.gateway._errors import DedupeUnavailable

from .conftest import PROJECT, WRITE_KEY, GatewayFactory, RunningGateway, metric

AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}
NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def event(**fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event_id": str(uuid.uuid4()),
        "event": "clicked",
        "distinct_id": "u_1",
        "timestamp": "2024-05-01T12:00:00.250Z",
        "properties": {},
        **fields,
    }


def body(*messages: dict[str, Any]) -> bytes:
    return json.dumps({"lib": "tests/1", "batch": list(messages)}).encode()


def post(gw: RunningGateway, content: bytes, *, key: str = WRITE_KEY) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/events",
        content=content,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def physical_rows(gw: RunningGateway) -> list[tuple[Any, ...]]:
    """Every stored row, before the ReplacingMergeTree collapses anything."""
    return gw.rows(
        "SELECT project, toString(event_id) AS id, properties FROM {db}.events ORDER BY project, id"
    )


def _buckets(gw: RunningGateway, client: redis.Redis) -> tuple[str, int, int]:
    """(the project's bucket keys' prefix, the bucket width, the current bucket)."""
    width = math.ceil(gw.settings.dedupe_ttl_seconds / BUCKETS)
    now, _ = client.time()
    return f"{gw.settings.redis_prefix}:ids:{PROJECT}:", width, now // width


def holder(gw: RunningGateway, client: redis.Redis, event_id: str) -> bytes | None:
    """What Redis holds for an id: the ticket that claimed it, b"d" (stored), or None."""
    base, _, bucket = _buckets(gw, client)
    for key in (base + str(bucket), base + str(bucket - 1)):
        found = client.hget(key, event_id)
        if isinstance(found, bytes):
            return found
    return None


def ticket_key(gw: RunningGateway, ticket: bytes | str) -> str:
    name = ticket.decode() if isinstance(ticket, bytes) else ticket
    return f"{gw.settings.redis_prefix}:ticket:{name}"


def held_elsewhere(gw: RunningGateway, client: redis.Redis, event_id: str, ticket: str) -> None:
    """Another gateway worker claimed `event_id` under `ticket` and is storing it now."""
    base, _, bucket = _buckets(gw, client)
    client.hset(base + str(bucket), event_id, ticket)
    client.set(ticket_key(gw, ticket), "p", ex=60)
    alive_elsewhere(gw, client, ticket)


def alive_elsewhere(gw: RunningGateway, client: redis.Redis, ticket: str) -> None:
    """The gateway process of `ticket` says it is alive (for 60 s)."""
    client.set(f"{gw.settings.redis_prefix}:alive:{ticket.partition('.')[0]}", "1", ex=60)


def claim_dropped(gw: RunningGateway, client: redis.Redis, event_id: str) -> bool:
    """The id's claim was released: its ticket is gone, so the id is free again."""
    found = holder(gw, client, event_id)
    return found is not None and found != b"d" and not client.exists(ticket_key(gw, found))


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# -- the same events again -------------------------------------------------------------------


@pytest.mark.parametrize("redis_dedupe", [True, False], ids=["redis", "in-process"])
def test_the_same_batch_sent_twice_is_stored_once(
    start_gateway: GatewayFactory, redis_dedupe: bool
) -> None:
    gw = start_gateway(redis=redis_dedupe)
    messages = [event(), event(), event()]
    first = post(gw, body(*messages))
    second = post(gw, body(*messages))
    assert first.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    assert second.json() == {"accepted": 0, "duplicates": 3, "rejected": []}
    assert physical_rows(gw) == sorted((PROJECT, m["event_id"], "{}") for m in messages)
    assert metric(gw, 'headwater_events_duplicate_total{source="native"}') == 3.0
    assert metric(gw, 'headwater_events_accepted_total{source="native"}') == 3.0


def test_the_same_batch_sent_concurrently_is_stored_once(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    messages = [event() for _ in range(5)]
    content = body(*messages)
    senders = 8
    start = threading.Barrier(senders)

    def send(_: int) -> dict[str, Any]:
        start.wait()
        response = post(gw, content)
        assert response.status_code == 200
        result: dict[str, Any] = response.json()
        return result

    with ThreadPoolExecutor(senders) as pool:
        results = list(pool.map(send, range(senders)))

    assert sum(r["accepted"] for r in results) == 5
    assert sum(r["duplicates"] for r in results) == 5 * (senders - 1)
    assert all(r["accepted"] + r["duplicates"] == 5 for r in results)
    assert physical_rows(gw) == sorted((PROJECT, m["event_id"], "{}") for m in messages)


def test_duplicates_within_one_batch_are_caught(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    a, b = event(properties={"copy": 1}), event()
    again = {**a, "properties": {"copy": 2}}
    response = post(gw, body(a, b, again, a))
    assert response.json() == {"accepted": 2, "duplicates": 2, "rejected": []}
    # the first of the copies is the one kept, its properties as the sender spelled them
    assert physical_rows(gw) == sorted(
        [(PROJECT, a["event_id"], '{"copy": 1}'), (PROJECT, b["event_id"], "{}")]
    )


def test_an_id_is_deduplicated_per_project(start_gateway: GatewayFactory) -> None:
    gw = start_gateway()
    message = event()
    assert post(gw, body(message)).json()["accepted"] == 1
    assert post(gw, body(message), key="other-key").json()["accepted"] == 1
    assert physical_rows(gw) == [
        ("other", message["event_id"], "{}"),
        (PROJECT, message["event_id"], "{}"),
    ]


def test_a_stored_event_is_confirmed_for_the_long_ttl(
    start_gateway: GatewayFactory, redis_client: redis.Redis
) -> None:
    """The ids of a request hold its ticket, which the confirm marks stored; the id of a
    one-event request is marked itself, and its ticket key goes."""
    gw = start_gateway(dedupe_pending_seconds=30, dedupe_ttl_seconds=3600)
    pair, alone = [event(), event()], event()
    assert post(gw, body(*pair)).json()["accepted"] == 2
    assert post(gw, body(alone)).json()["accepted"] == 1
    ticket = holder(gw, redis_client, pair[0]["event_id"])
    assert ticket is not None
    _wait_for(lambda: redis_client.get(ticket_key(gw, ticket)) == b"d")  # after the answers
    _wait_for(lambda: holder(gw, redis_client, alone["event_id"]) == b"d")
    assert holder(gw, redis_client, pair[1]["event_id"]) == ticket
    base, width, bucket = _buckets(gw, redis_client)
    assert width == 1800  # half the TTL
    # the ticket lives as long as its ids' bucket may: up to TTL + a width after the claim
    assert 3600 < redis_client.ttl(ticket_key(gw, ticket)) <= 4 * 1800
    assert 4 * 1800 < redis_client.ttl(base + str(bucket)) <= 5 * 1800  # unlinked before
    # duplicates, alone or together, leave no ticket of their own behind
    assert post(gw, body(alone)).json()["duplicates"] == 1
    assert post(gw, body(*pair)).json()["duplicates"] == 2
    tickets = redis_client.keys(f"{gw.settings.redis_prefix}:ticket:*")
    assert tickets == [ticket_key(gw, ticket).encode()]


def test_a_bucket_past_the_window_is_unlinked(
    start_gateway: GatewayFactory, redis_client: redis.Redis
) -> None:
    """Ids are kept for the TTL to the TTL and a width: a claim drops the buckets before."""
    gw = start_gateway()
    base, _, bucket = _buckets(gw, redis_client)
    old, older, kept = (base + str(bucket - n) for n in (BUCKETS + 1, BUCKETS + 2, BUCKETS))
    for key in (old, older, kept):
        redis_client.hset(key, "an-id", "d")
    assert post(gw, body(event())).json()["accepted"] == 1
    assert [redis_client.exists(key) for key in (old, older, kept)] == [0, 0, 1]


# -- failures ------------------------------------------------------------------------------


def test_a_failed_insert_releases_its_claims_so_the_retry_is_stored(
    start_gateway: GatewayFactory, redis_client: redis.Redis
) -> None:
    gw = start_gateway(insert_deadline_seconds=0.3)
    messages = [event(), event()]
    content = body(*messages)
    gw.clickhouse.command(f"DETACH TABLE {gw.database}.events")
    try:
        refused = post(gw, content)
    finally:
        gw.clickhouse.command(f"ATTACH TABLE {gw.database}.events")

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "2"
    assert refused.json()["error"].startswith("insert into events failed: ")
    assert [claim_dropped(gw, redis_client, m["event_id"]) for m in messages] == [True, True]

    retry = post(gw, content)
    again = post(gw, content)
    assert retry.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert again.json() == {"accepted": 0, "duplicates": 2, "rejected": []}
    assert physical_rows(gw) == sorted((PROJECT, m["event_id"], "{}") for m in messages)


def test_an_insert_that_hangs_past_the_deadline_is_a_503_and_the_retry_is_kept(
    start_gateway: GatewayFactory, redis_client: redis.Redis
) -> None:
    """ClickHouse made slow (a view on `events` that sleeps 3 s per block): the requests
    get their 503 at the deadline, not when the insert ends, and /readyz says ClickHouse
    does not answer. The late insert still stores the rows, so the table holds them twice
    until it collapses them."""
    gw = start_gateway(insert_deadline_seconds=0.5)
    db = gw.database
    gw.clickhouse.command(f"CREATE TABLE {db}.slow_sink (x UInt8) ENGINE = Null")
    slow = f"SELECT sleep(3) AS x FROM {db}.events"  # noqa: S608 - the test's own database
    gw.clickhouse.command(f"CREATE MATERIALIZED VIEW {db}.slow TO {db}.slow_sink AS {slow}")
    messages = [event(), event()]
    content = body(*messages)
    refused = post(gw, content)
    ready = httpx.get(gw.url + "/readyz", timeout=30)  # waits 2 s for the connection
    gw.clickhouse.command(f"DROP TABLE {db}.slow")  # waits for the slow insert to end

    assert (refused.status_code, refused.headers["Retry-After"], refused.json()) == (
        503,
        "2",
        {"error": "ClickHouse did not finish an insert within 0.5 s"},
    )
    assert (ready.status_code, ready.json()["clickhouse"]) == (503, "unreachable")
    assert [claim_dropped(gw, redis_client, m["event_id"]) for m in messages] == [True, True]
    retry = post(gw, content)
    assert retry.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert httpx.get(gw.url + "/readyz").status_code == 200
    ids = sorted((PROJECT, m["event_id"], "{}") for m in messages)
    assert physical_rows(gw) == sorted(ids + ids)
    assert gw.rows("SELECT count() FROM {db}.events FINAL") == [(2,)]


def test_a_batch_the_queue_cannot_take_releases_its_claims(
    start_gateway: GatewayFactory, redis_client: redis.Redis
) -> None:
    gw = start_gateway(commit_queue_rows=3, commit_max_delay_ms=3000)
    warm_up, waiting, refused_batch = [event()], [event(), event()], [event(), event()]
    post(gw, body(*warm_up))  # inserted at once; the next insert waits for 3 s after it
    first = threading.Thread(target=post, args=(gw, body(*waiting)))
    first.start()
    _wait_for(lambda: gw.gateway.queued_rows == 2)  # the first request waits for its block
    refused = post(gw, body(*refused_batch))  # room for 1 more row, not 2: claimed, then not
    assert (refused.status_code, refused.headers["Retry-After"], refused.json()) == (
        503,
        "1",
        {"error": "2 rows already wait for ClickHouse"},
    )
    assert [claim_dropped(gw, redis_client, m["event_id"]) for m in refused_batch] == [True, True]
    first.join()
    # the client's retry is stored, not dropped as a duplicate
    assert post(gw, body(*refused_batch)).json()["accepted"] == 2
    stored = [*warm_up, *waiting, *refused_batch]
    expected = sorted((PROJECT, m["event_id"], "{}") for m in stored)
    assert physical_rows(gw) == expected


def test_a_full_queue_refuses_a_request_before_reading_it(
    start_gateway: GatewayFactory, redis_client: redis.Redis
) -> None:
    gw = start_gateway(commit_queue_rows=2, commit_max_delay_ms=3000)
    post(gw, body(event()))
    first = threading.Thread(target=post, args=(gw, body(event(), event())))
    first.start()
    _wait_for(lambda: gw.gateway.queued_rows == 2)
    refused_event = event()
    native = post(gw, body(refused_event))
    posthog = httpx.post(f"{gw.url}/batch/", json={"api_key": WRITE_KEY, "batch": []})
    segment = httpx.post(f"{gw.url}/v1/batch", json={"writeKey": WRITE_KEY, "batch": []})
    first.join()
    for answer in (native, posthog, segment):
        assert (answer.status_code, answer.headers["Retry-After"], answer.json()) == (
            503,
            "1",
            {"error": "2 rows already wait for ClickHouse"},
        )
    assert holder(gw, redis_client, refused_event["event_id"]) is None  # never claimed


def test_concurrent_requests_share_one_insert(start_gateway: GatewayFactory) -> None:
    gw = start_gateway(commit_max_delay_ms=4000)
    post(gw, body(event()))  # after a quiet spell: inserted at once
    with ThreadPoolExecutor(8) as pool:  # within 4 s of it: all wait for the next insert
        answers = list(pool.map(lambda _: post(gw, body(event(), event())), range(8)))
    assert [a.json()["accepted"] for a in answers] == [2] * 8
    inserts = metric(gw, "headwater_commit_rows_count")
    assert (inserts, metric(gw, "headwater_commit_rows_sum")) == (2.0, 17.0)


def test_a_request_larger_than_the_queue_is_taken_alone(start_gateway: GatewayFactory) -> None:
    gw = start_gateway(commit_queue_rows=2)
    messages = [event(), event(), event()]
    assert post(gw, body(*messages)).json() == {"accepted": 3, "duplicates": 0, "rejected": []}


def _wait_for(condition: Callable[[], bool]) -> None:
    """Poll until `condition` holds (the test's timeout bounds the wait)."""
    while not condition():
        time.sleep(0.01)


def test_an_insert_that_recovers_within_the_deadline_is_acknowledged(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="headwater.gateway")
    gw = start_gateway(insert_deadline_seconds=30)
    messages = [event(), event()]
    gw.clickhouse.command(f"DETACH TABLE {gw.database}.events")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post, gw, body(*messages))
        try:
            _wait_for(lambda: any("insert failed" in r.getMessage() for r in caplog.records))
        finally:
            gw.clickhouse.command(f"ATTACH TABLE {gw.database}.events")
        response = pending.result()
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert physical_rows(gw) == sorted((PROJECT, m["event_id"], "{}") for m in messages)


def test_an_id_another_worker_is_storing_is_waited_for(
    start_gateway: GatewayFactory, redis_client: redis.Redis
) -> None:
    """Another gateway worker holds the ids under its pending ticket: this one waits for
    the ticket's outcome."""
    gw = start_gateway()
    stored, released = event(), event()
    held_elsewhere(gw, redis_client, stored["event_id"], "w2.1")
    held_elsewhere(gw, redis_client, released["event_id"], "w2.2")
    with ThreadPoolExecutor(2) as pool:
        waiting_stored = pool.submit(post, gw, body(stored))
        waiting_released = pool.submit(post, gw, body(released))
        redis_client.set(ticket_key(gw, "w2.1"), "d", ex=60)  # the other one stored it
        redis_client.delete(ticket_key(gw, "w2.2"))  # the other one failed
        assert waiting_stored.result().json() == {"accepted": 0, "duplicates": 1, "rejected": []}
        assert waiting_released.result().json() == {
            "accepted": 1,
            "duplicates": 0,
            "rejected": [],
        }
    assert physical_rows(gw) == [(PROJECT, released["event_id"], "{}")]


def test_an_id_held_past_the_deadline_is_a_503(
    start_gateway: GatewayFactory, redis_client: redis.Redis
) -> None:
    gw = start_gateway(insert_deadline_seconds=0.2)
    held, free = event(), event()
    held_elsewhere(gw, redis_client, held["event_id"], "w2.1")
    response = post(gw, body(free, held))
    assert (response.status_code, response.headers["Retry-After"], response.json()) == (
        503,
        "1",
        {"error": "1 events are being stored by another request"},
    )
    # nothing acknowledged, nothing stored, and the id this request had claimed is free
    assert physical_rows(gw) == []
    assert claim_dropped(gw, redis_client, free["event_id"])


def test_an_id_held_by_a_gateway_that_died_is_stored_at_once(
    start_gateway: GatewayFactory, redis_client: redis.Redis
) -> None:
    """A gateway killed mid-insert leaves its claims pending for the pending TTL (60 s);
    its process no longer says it is alive, so a retry need not wait for them."""
    gw = start_gateway(insert_deadline_seconds=0.2)
    held, free = event(), event()
    held_elsewhere(gw, redis_client, held["event_id"], "w9.1")
    redis_client.delete(f"{gw.settings.redis_prefix}:alive:w9")  # SIGKILLed
    response = post(gw, body(free, held))
    assert (response.status_code, response.json()) == (
        200,
        {"accepted": 2, "duplicates": 0, "rejected": []},
    )
    assert sorted(row[1] for row in physical_rows(gw)) == sorted(
        [held["event_id"], free["event_id"]]
    )


def test_a_gateway_says_it_is_alive_while_it_runs(
    start_gateway: GatewayFactory, redis_client: redis.Redis
) -> None:
    gw = start_gateway()
    prefix = gw.settings.redis_prefix
    (key,) = redis_client.keys(f"{prefix}:alive:*")
    assert 0 < redis_client.ttl(key) <= ALIVE_SECONDS
    gw.stop()
    assert redis_client.keys(f"{prefix}:alive:*") == []  # a clean stop says so at once


def test_without_redis_events_are_accepted_and_the_table_collapses_copies(
    start_gateway: GatewayFactory,
) -> None:
    gw = start_gateway(redis_url=NOWHERE)
    messages = [event(), event()]
    first = post(gw, body(*messages))
    second = post(gw, body(*messages))
    assert first.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert second.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert metric(gw, "headwater_dedupe_bypassed_total") == 4.0
    ready = httpx.get(gw.url + "/readyz")
    assert (ready.status_code, ready.json()) == (
        503,
        {
            "ready": False,
            "clickhouse": "ok",
            "redis": "unreachable",
            "dedupe_degraded": True,
            "queued_rows": 0,
        },
    )
    # Both copies were inserted; the ReplacingMergeTree is the backstop.
    assert len(physical_rows(gw)) == 4
    assert gw.rows("SELECT count() FROM {db}.events FINAL") == [(2,)]


def test_without_redis_a_fail_closed_gateway_refuses(start_gateway: GatewayFactory) -> None:
    gw = start_gateway(redis_url=NOWHERE, redis_failure="reject")
    response = post(gw, body(event(), event(event="")))
    assert (response.status_code, response.headers["Retry-After"]) == (503, "1")
    assert response.json()["error"].startswith("Redis claim failed: ")
    assert physical_rows(gw) == []
    assert metric(gw, "headwater_dedupe_bypassed_total") == 0.0
    assert httpx.get(gw.url + "/readyz").json()["dedupe_degraded"] is True


def test_readiness_with_redis_and_in_process(start_gateway: GatewayFactory) -> None:
    with_redis, in_process = start_gateway(), start_gateway(redis=False)
    expected = {"ready": True, "clickhouse": "ok", "dedupe_degraded": False, "queued_rows": 0}
    ready = httpx.get(with_redis.url + "/readyz")
    assert (ready.status_code, ready.json()) == (200, {**expected, "redis": "ok"})
    ready = httpx.get(in_process.url + "/readyz")
    assert (ready.status_code, ready.json()) == (200, {**expected, "redis": "in-process"})


# -- the store contract, run against both stores ---------------------------------------------

StoreFactory = Callable[..., DedupeStore]


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest, redis_url: str) -> StoreFactory:
    def make(*, ttl: int = 3600, pending_ttl: int = 60) -> DedupeStore:
        if request.param == "memory":
            return MemoryDedupeStore(ttl=ttl, pending_ttl=pending_ttl)
        return RedisDedupeStore(
            redis_url, prefix=f"t{uuid.uuid4().hex}", ttl=ttl, pending_ttl=pending_ttl
        )

    return make


def found(*claims: Claim) -> str:
    """A claim's answer: one character per id."""
    return "".join(claims)


SEEN, NEW, PENDING = Claim.SEEN, Claim.NEW, Claim.PENDING


def test_store_claim_confirm_release(make_store: StoreFactory) -> None:
    async def scenario() -> tuple[list[str], bool]:
        store = make_store()
        await store.start()
        first = store.ticket("p", ["a", "b"])
        second = store.ticket("p", ["a", "c"])
        other = store.ticket("q", ["a", "d"])
        try:
            answers = [
                await store.claim("p", [], first),
                await store.claim("p", ["a", "b"], first),
                await store.claim("p", ["a", "c"], second),  # a: pending
                await store.claim("q", ["a", "d"], other),  # q's a is not p's
                await store.claim("p", ["a", "b"], first),  # a claimer's own ids are its own
            ]
            await store.confirm([first])
            await store.release(second, "p", ["c"])
            ids = ["a", "b", "c"]
            answers.append(await store.claim("p", ids, store.ticket("p", ids)))
            await store.release(first, "p", ["a"])  # settled already: changes nothing
            answers.append(await store.claim("p", ["a"], store.ticket("p", ["a"])))
            answers.append(await store.claim("q", ["a"], store.ticket("q", ["a"])))
            return answers, await store.ping()
        finally:
            await store.close()

    assert asyncio.run(scenario()) == (
        [
            "",
            found(NEW, NEW),
            found(PENDING, NEW),
            found(NEW, NEW),
            found(NEW, NEW),
            found(SEEN, SEEN, NEW),
            found(SEEN),
            found(PENDING),  # q's claimer neither confirmed nor released
        ],
        True,
    )


def test_store_one_id_requests(make_store: StoreFactory) -> None:
    """A request of one id (in Redis: no ticket key) against requests of several."""

    async def scenario() -> list[str]:
        store = make_store()
        await store.start()
        alone, twin = store.ticket("p", ["x"]), store.ticket("p", ["x"])
        other, pair = store.ticket("p", ["z"]), store.ticket("p", ["x", "y"])
        try:
            answers = [
                await store.claim("p", ["x"], alone),
                await store.claim("p", ["x", "y"], pair),  # x: the lone request's, pending
                await store.claim("p", ["x"], twin),  # the same id sent again, alone
                await store.claim("p", ["z"], other),
            ]
            await store.release(twin, "p", [])  # gave up waiting: frees nothing of the first's
            await store.confirm([alone])
            await store.release(other, "p", ["z"])
            await store.release(alone, "p", ["x"])  # settled already: changes nothing
            answers.append(await store.claim("p", ["x", "z"], store.ticket("p", ["x", "z"])))
            return answers
        finally:
            await store.close()

    assert asyncio.run(scenario()) == [
        found(NEW),
        found(PENDING, NEW),
        found(PENDING),
        found(NEW),
        found(SEEN, NEW),
    ]


def test_tickets_differ_within_and_across_stores(make_store: StoreFactory) -> None:
    one, other = make_store(), make_store()
    ids = ["a", "b"]
    names = [one.ticket("p", ids), one.ticket("p", ids), other.ticket("p", ids)]
    for store in (one, other):
        asyncio.run(store.close())
    assert len(set(names)) == 3


def test_store_an_abandoned_claim_expires(make_store: StoreFactory) -> None:
    async def scenario() -> list[str]:
        store = make_store(pending_ttl=1)
        await store.start()
        try:
            answers = [
                await store.claim("p", ["a"], store.ticket("p", ["a"])),
                await store.claim("p", ["b", "c"], store.ticket("p", ["b", "c"])),
            ]
            await asyncio.sleep(1.2)  # the claimers died: no confirm, no release
            ids = ["a", "b", "c"]
            return [*answers, await store.claim("p", ids, store.ticket("p", ids))]
        finally:
            await store.close()

    assert asyncio.run(scenario()) == [found(NEW), found(NEW, NEW), found(NEW, NEW, NEW)]


def test_store_remembers_an_id_for_the_ttl_then_forgets_it(make_store: StoreFactory) -> None:
    """In Redis (a 2 s TTL: buckets of 1 s, three read) the confirms come a bucket after
    their claims and still find the ids; an id is kept for the TTL, and at most half a TTL
    and a bucket's rounding more."""

    async def scenario() -> list[str]:
        store = make_store(ttl=2)
        await store.start()
        ids = ["a", "b", "c"]
        try:
            alone, pair = store.ticket("p", ["a"]), store.ticket("p", ["b", "c"])
            answers = [
                await store.claim("p", ["a"], alone),
                await store.claim("p", ["b", "c"], pair),
            ]
            await asyncio.sleep(1.1)
            await store.confirm([alone, pair])
            answers.append(await store.claim("p", ids, store.ticket("p", ids)))
            await asyncio.sleep(3.0)  # over 3 s since the claims
            answers.append(await store.claim("p", ids, store.ticket("p", ids)))
            return answers
        finally:
            await store.close()

    assert asyncio.run(scenario()) == [
        found(NEW),
        found(NEW, NEW),
        found(SEEN, SEEN, SEEN),
        found(NEW, NEW, NEW),
    ]


def test_redis_store_unreachable() -> None:
    async def scenario() -> tuple[bool, list[str]]:
        store = RedisDedupeStore(NOWHERE, ttl=60, pending_ttl=10)
        errors = []
        ticket = store.ticket("p", ["a", "b"])
        for call in (
            store.claim("p", ["a", "b"], ticket),
            store.confirm([ticket]),
            store.release(ticket, "p", ["a", "b"]),
        ):
            try:
                await call
            except DedupeUnavailable as exc:
                errors.append(str(exc).split(":")[0])
        alive = await store.ping()
        await store.close()
        return alive, errors

    assert asyncio.run(scenario()) == (
        False,
        ["Redis claim failed", "Redis confirm failed", "Redis release failed"],
    )


def test_concurrent_claims_share_one_call_and_an_id_claimed_twice_waits(
    make_store: StoreFactory,
) -> None:
    async def scenario() -> list[str]:
        store = make_store()
        await store.start()

        async def claim(project: str, *ids: str) -> str:
            return await store.claim(project, ids, store.ticket(project, ids or ("-",)))

        try:
            done = store.ticket("p", ["stored"])
            await store.claim("p", ["stored"], done)
            await store.confirm([done])
            return list(
                await asyncio.gather(
                    claim("p", "a", "b"),
                    claim("p", "b", "stored", "c"),  # b: the first caller's, pending
                    claim("p"),
                    claim("p", "a"),
                    claim("q", "a", "b"),  # another project's, in the same call
                )
            )
        finally:
            await store.close()

    assert asyncio.run(scenario()) == [
        found(NEW, NEW),
        found(PENDING, SEEN, NEW),
        "",
        found(PENDING),
        found(NEW, NEW),
    ]


def test_the_coalescer_sends_one_call_per_tick_and_cuts_long_ones() -> None:
    sent: list[list[str]] = []

    async def run(lines: list[str]) -> bytes:
        sent.append(lines)
        await asyncio.sleep(0)
        # each line's answer: the last letter of every word after its first
        return "".join(word[-1] for line in lines for word in line.split()[1:]).encode()

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        coalesce = Coalescer(run, max_words=5)
        first = await asyncio.gather(
            coalesce(["t1", "a1", "b2"], 2), coalesce(["t2", "c3"], 1), coalesce(["t3"])
        )
        later = await asyncio.gather(
            coalesce(["t4", "e5", "f6", "g7"], 3), coalesce(["t5", "h8", "i9"], 2)
        )
        return list(first), list(later)

    assert asyncio.run(scenario()) == ([b"12", b"3", b""], [b"567", b"89"])
    assert sent == [["t1 a1 b2", "t2 c3"], ["t3"], ["t4 e5 f6 g7"], ["t5 h8 i9"]]


def test_a_failed_coalesced_call_fails_each_of_its_callers() -> None:
    async def run(lines: list[str]) -> bytes:
        raise DedupeUnavailable(f"Redis claim failed: {len(lines)} callers")

    async def scenario() -> list[BaseException | bytes]:
        coalesce = Coalescer(run)
        return list(
            await asyncio.gather(
                coalesce(["t1", "a"], 1), coalesce(["t2", "b", "c"], 2), return_exceptions=True
            )
        )

    assert [str(found) for found in asyncio.run(scenario())] == [
        "Redis claim failed: 2 callers"
    ] * 2
