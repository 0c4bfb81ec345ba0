"""The gateway on a real Redis Cluster (three masters, three replicas, started here).

A desk's keys share one hash tag (``GATEWAY_REDIS_PREFIX={desk}:``), arq's job keys included
(job ids start with the tag), so every script and MULTI stays on one node. The gateway and the
worker are pointed at a node that does *not* serve the desk and find the one that does; a
failover in the middle of the traffic moves the desk to another node and nothing acknowledged
is lost or taken twice.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
import uuid

import pytest
import redis as redis_sync
from litestar.testing import AsyncTestClient

from gateway.app import create_app
from router.redis_pool import ClusterPrefixError, redis_client, route_now
from gateway.settings import load_settings
from tests.conftest import ALICE, APP, SUPERVISOR, make_env
from tests.redisha import (FAILOVER_BOUND_S, RetryingChannel, complaints_per_message, local_cluster, poll,
                           run_worker_until, worker_processes)  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with local_cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


def desk_env(cluster, tmp_path, **extra):
    prefix = "{desk" + uuid.uuid4().hex[:8] + "}:"
    owner = cluster.owner_of(prefix)
    elsewhere = next(p for p in cluster.masters() if p != owner)  # not the desk's node, on purpose
    (tmp_path / "plugins.toml").write_text("[plugins.app]\nenabled = true\n")
    env = make_env(cluster.url(elsewhere), prefix, tmp_path / "var", GATEWAY_PLUGINS=str(tmp_path / "plugins.toml"),
                   GATEWAY_CONTACT_RATE_PER_MINUTE="0", **extra)
    return env, prefix, owner


async def post_until_taken(client, body, key, refused=None):
    """What a channel does: retry with the same idempotency key until the gateway takes it (a
    503 is counted in ``refused``); fails after FAILOVER_BOUND_S."""
    deadline = time.monotonic() + FAILOVER_BOUND_S
    while time.monotonic() < deadline:
        resp = await client.post("/v1/messages", json={**body, "client_message_id": key}, headers=APP)
        if resp.status_code in (200, 202):
            return resp.json()["message_id"], resp.status_code
        assert resp.status_code == 503, resp.text
        assert resp.headers["Retry-After"]
        if refused is not None:
            refused[resp.json()["code"]] += 1
        await asyncio.sleep(0.1)
    raise AssertionError(f"never taken: {key}")


async def test_a_desk_lives_in_one_slot_end_to_end(cluster, tmp_path):
    env, prefix, owner = desk_env(cluster, tmp_path)
    settings = load_settings(env)
    async with AsyncTestClient(app=create_app(settings), raise_server_exceptions=False) as client:
        ids = []
        for n in range(12):
            body = {"user_id": f"u{n % 6}", "text": f"I was charged twice for order {n % 6}, please refund"}
            mid, status = await post_until_taken(client, body, f"k{n}")
            assert status == 202
            ids.append(mid)
        again, status = await post_until_taken(client, {"user_id": "u0", "text": "I was charged twice for order 0, "
                                                        "please refund"}, "k0")
        assert again == ids[0]  # the idempotency key still answers

        def all_done():
            return all(cluster.client(owner).hget(f"{prefix}msg:{mid}", "status") == b"processed" for mid in ids)

        await asyncio.to_thread(run_worker_until, env, all_done)

        complaints = (await client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"]
        # six customers, each wrote the same twice: the second is a repeat of the first's case
        assert len(complaints) == 6
        assert sorted(c["customer_id"] for c in complaints) == sorted({c["customer_id"] for c in complaints})
        count, taken = complaints_per_message(cluster.client(owner), prefix)
        assert count == 6 and sorted(taken) == sorted(ids) and set(taken.values()) == {1}
        skill = complaints[0]["skill"]
        claimed = await client.post(f"/v1/queues/{skill}/claim", headers=ALICE)
        assert claimed.status_code == 200, claimed.text
        cid = claimed.json()["complaint"]["id"]
        reply = await client.post(f"/v1/complaints/{cid}/replies", json={"text": "Refunded."}, headers=ALICE)
        assert reply.status_code == 201, reply.text
        assert reply.json()["complaint"]["status"] == "responded"
        reply_id = reply.json()["complaint"]["replies"][-1]["id"]

        def reply_sent():
            return b'"delivered"' in (cluster.client(owner).hget(f"{prefix}delivery:{cid}", reply_id) or b"")

        await asyncio.to_thread(run_worker_until, env, reply_sent)
        app_view = (await client.get(f"/v1/complaints/{cid}", headers=APP)).json()
        assert ("agent", "Refunded.", "delivered") in [(x["kind"], x["text"], x["delivery"]) for x in app_view["replies"]]

    # every key the desk made (arq's job keys included) is on the desk's node, none elsewhere
    on_owner = cluster.keys_on(owner)
    assert any(k.startswith(prefix.encode()) for k in on_owner)
    slot = cluster.client(owner).execute_command("CLUSTER", "KEYSLOT", prefix)
    assert {cluster.client(owner).execute_command("CLUSTER", "KEYSLOT", k) for k in on_owner} == {slot}
    for port in cluster.masters():
        if port != owner:
            assert cluster.keys_on(port) == [], f"keys outside the desk's node on {port}"


async def test_failover_in_the_middle_loses_nothing_and_repeats_nothing(cluster, tmp_path, worker_processes):
    env, prefix, owner = desk_env(cluster, tmp_path)
    settings = load_settings(env)
    replica = cluster.replica_of(owner)
    refused = collections.Counter()
    worker = worker_processes(env)  # works through the failover
    async with AsyncTestClient(app=create_app(settings), raise_server_exceptions=False) as client:
        ids = {}
        failover = None
        for n in range(60):
            if n == 30:  # the replica takes over the desk's slot, with the traffic flowing
                # ... while the worker waits for work in a BLPOP on the master, which Redis ends
                # with "UNBLOCKED ... (master -> replica?)" when the master turns replica
                master = cluster.client(owner)
                await asyncio.to_thread(poll, lambda: all(
                    master.hget(f"{prefix}msg:{mid}", "status") == b"processed" for mid in ids.values())
                    and master.info("clients")["blocked_clients"] >= 1, "the worker waits on the master")
                failover = asyncio.create_task(asyncio.to_thread(cluster.fail_over, replica, prefix))
            if n == 45:  # the last fifteen go to the new master, whatever the machine's speed
                await failover
            body = {"user_id": f"f{n}", "text": f"my transfer {n} never arrived"}
            ids[n], _ = await post_until_taken(client, body, f"f{n}", refused)
            await asyncio.sleep(0.01)
        assert len(ids) == 60

    await asyncio.to_thread(cluster.wait_owner, prefix, replica, "every node knows the replica serves the desk")
    r = cluster.client(replica)

    def all_done():
        return all(r.hget(f"{prefix}msg:{mid}", "status") == b"processed" for mid in ids.values())

    await asyncio.to_thread(worker.wait_until, all_done)  # it followed the desk to its new node
    await asyncio.to_thread(run_worker_until, env, all_done)  # and a new one starts at a node that lost it
    assert len(set(ids.values())) == 60  # sixty messages taken, each once
    count, taken = complaints_per_message(r, prefix)
    assert count == 60  # sixty customers, sixty complaints: none lost
    assert sorted(taken) == sorted(ids.values()) and set(taken.values()) == {1}  # none made twice
    rode_out = sorted(set(re.findall(r"redis unavailable \((\w+)\)", worker.output())))
    print(f"requests refused with 503 during the failover: {dict(refused)}; the worker rode out: {rode_out}")


async def test_a_commit_while_the_desks_slot_moves_is_refused_whole(cluster):
    """Resharding: while the desk's slot is MIGRATING, a commit whose shared keys are all still
    here must not run half here (the message marked done, its complaint refused on the next key):
    the script declares every key it touches, so Redis refuses the whole call (ASK / TRYAGAIN) and
    the message waits, untouched, for the retry on the slot's new node."""
    from datetime import datetime, timezone

    import redis.asyncio as aioredis

    from normalizer.schema import Complaint, ComplaintStatus, Contact
    from router.store import ComplaintStore, Keys

    prefix = "{desk" + uuid.uuid4().hex[:8] + "}:"
    k = Keys(prefix)
    owner = cluster.owner_of(prefix)
    other = next(p for p in cluster.masters() if p != owner)
    here, there = cluster.client(owner), cluster.client(other)
    slot = here.execute_command("CLUSTER", "KEYSLOT", k.pending)
    day = datetime.now(timezone.utc).strftime("%Y%m%d")
    for key in (k.pending, k.outbox, k.timers, k.arq_queue):  # a busy desk: the shared keys exist
        here.zadd(key, {"x": 1})
    here.sadd(k.skills, "s")
    here.rpush(k.wake, "1")
    here.set(k.case_seq(day), 100)
    here.hset(k.msg("m1"), mapping={"status": "received", "channel": "app"})
    here.zadd(k.pending, {"m1": 1})
    there.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", here.execute_command("CLUSTER", "MYID").decode())
    here.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", there.execute_command("CLUSTER", "MYID").decode())
    r = aioredis.Redis(host="127.0.0.1", port=owner)
    try:
        store = ComplaintStore(prefix)
        store.bind(r)
        now = datetime.now(timezone.utc)
        complaint = Complaint(id="cmp_m1", case_number="CASENUMBERx", status=ComplaintStatus.accepted, formal_complaint=False,
                              category="transaction", channel="app", customer_id="cus_1",
                              contact=Contact(kind="app_user", value="u1"), language="en", created_at=now,
                              updated_at=now, skill="payments")
        with pytest.raises(redis_sync.exceptions.ResponseError, match="ASK|TRYAGAIN"):
            await store.commit_new_complaint("m1", complaint, case_placeholder="CASENUMBERx")
        for node in (here, there):  # (an absent key of a MIGRATING slot answers ASK even to a read)
            node.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
        assert here.hget(k.msg("m1"), "status") == b"received"  # not marked done
        assert here.zscore(k.pending, "m1") == 1  # still waiting
        assert not here.exists(k.complaint("cmp_m1"))
    finally:
        await r.aclose()
        for node in (here, there):
            node.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
        for key in here.keys(prefix.replace("{", "\\{").replace("}", "\\}") + "*"):
            here.delete(key)


async def test_a_prefix_without_a_hash_tag_is_refused_on_a_cluster(cluster, tmp_path):
    env, _, _ = desk_env(cluster, tmp_path)
    client = redis_client(env["REDIS_URL"], follow_slot_of="notag:")
    with pytest.raises(ClusterPrefixError, match="hash tag such as"):
        await route_now(client)
    await client.aclose()
    env["GATEWAY_REDIS_PREFIX"] = "notag:"  # the gateway does not start with it
    with pytest.raises(BaseException) as failed:
        async with AsyncTestClient(app=create_app(load_settings(env))):
            pass
    assert "hash tag such as" in repr(failed.value) or failed.group_contains(ClusterPrefixError)


async def test_a_plain_redis_is_used_as_is(redis_url):
    client = redis_client(redis_url, follow_slot_of="{desk}:")
    assert await client.ping()
    assert client.connection_pool.slot is None  # not a cluster: nothing to follow
    await client.aclose()


async def test_the_desks_master_killed_acknowledged_messages_survive_on_the_replica(tmp_path, worker_processes):
    """SIGKILL of the desk's master in the middle of the traffic, with GATEWAY_REDIS_WAIT_REPLICAS=1:
    nothing is acknowledged before a replica holds it, so the promoted replica has every
    acknowledged message. While the desk has no replica left, intake answers 503 (not
    replicated) instead of acknowledging what a second failure would lose; the old master comes
    back as a replica and acknowledgements resume."""
    with local_cluster(tmp_path / "cluster") as cluster:
        env, prefix, owner = desk_env(cluster, tmp_path, GATEWAY_REDIS_WAIT_REPLICAS="1", GATEWAY_REDIS_WAIT_MS="300")
        replica = cluster.replica_of(owner)
        worker = worker_processes(env)  # works through the failover
        async with AsyncTestClient(app=create_app(load_settings(env)), raise_server_exceptions=False) as client:
            channel = RetryingChannel(client)
            until = time.monotonic() + 3 * FAILOVER_BOUND_S
            for n in range(20):
                await channel.send(n, until)
            cluster.kill(owner)  # no goodbye: the replica is promoted after the node timeout

            def bring_back() -> None:  # the old master returns once the failover is done
                poll(lambda: cluster.owner_of(prefix) == replica, "the replica was promoted")
                cluster.start(owner)

            back = asyncio.create_task(asyncio.to_thread(bring_back))
            for n in range(20, 50):
                await channel.send(n, until)
            await back
            assert len(channel.acked) == 50, f"not all acknowledged in time: {channel.answers}"
        acked = channel.acked

        new_owner = cluster.owner_of(prefix)
        assert new_owner == replica
        r = cluster.client(new_owner)
        for n, mid in acked.items():  # every acknowledged message is on the promoted replica
            assert r.hget(f"{prefix}msg:{mid}", "status") is not None, f"acknowledged message {n} lost"

        def all_done():
            return all(r.hget(f"{prefix}msg:{mid}", "status") == b"processed" for mid in acked.values())

        await asyncio.to_thread(worker.wait_until, all_done)  # it never exited
        assert len(set(acked.values())) == 50
        count, taken = complaints_per_message(r, prefix)
        assert count == 50  # fifty customers, fifty complaints: none lost
        assert sorted(taken) == sorted(acked.values()) and set(taken.values()) == {1}  # none made twice
        assert channel.answers["not_replicated"] + channel.answers["storage_unavailable"] > 0  # answered, not hidden
        print(f"answers while the master died and came back: {dict(channel.answers)}")


async def test_without_the_replicas_asked_for_nothing_is_acknowledged(redis_url, prefix, tmp_path):
    """The machine's Redis has no replica: with GATEWAY_REDIS_WAIT_REPLICAS=1 a message is stored
    but answered 503 (the channel retries), and the retry is the same message, not a second."""
    env = make_env(redis_url, prefix, tmp_path / "var", GATEWAY_REDIS_WAIT_REPLICAS="1", GATEWAY_REDIS_WAIT_MS="50")
    async with AsyncTestClient(app=create_app(load_settings(env)), raise_server_exceptions=False) as client:
        body = {"user_id": "w1", "text": "refund please", "client_message_id": "w1"}
        first = await client.post("/v1/messages", json=body, headers=APP)
        again = await client.post("/v1/messages", json=body, headers=APP)
    for resp in (first, again):
        assert resp.status_code == 503 and resp.json()["code"] == "not_replicated" and resp.headers["Retry-After"]
    r = redis_sync.Redis.from_url(redis_url)
    assert r.zcard(f"{prefix}pending") == 1  # stored once, to be processed; only the acknowledgement waits


async def test_nothing_goes_out_before_the_replicas_have_what_led_to_it(redis_url, prefix, tmp_path):
    """With GATEWAY_REDIS_WAIT_REPLICAS, a reply waits for the replicas before it is handed to its
    channel (a failover must not make the gateway forget it answered, and answer again)."""
    from router.store import ComplaintStore
    from plugins.settings import IntakeLimits
    from router.redis_pool import redis_client as client_for

    r = client_for(redis_url)
    waiting = ComplaintStore(prefix, limits=IntakeLimits(wait_replicas=1, wait_ms=20))
    waiting.bind(r)
    plain = ComplaintStore(prefix)
    plain.bind(r)
    assert await plain.replicated("send")  # not asked to wait: nothing to wait for
    assert not await waiting.replicated("send")  # the machine's Redis has no replica
    assert await r.hget(f"{prefix}metrics", "gateway_replication_waits|for=send") == b"1"
    await r.aclose()
