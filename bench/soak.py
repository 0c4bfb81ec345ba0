"""Soak: mixed-channel traffic through several gateway processes into several workers on one
Redis (AOF, appendfsync always), while a worker is SIGKILLed every few seconds and restarted.

    .venv/bin/python bench/soak.py                       # 10,000 messages (the issue's soak)
    .venv/bin/python bench/soak.py --messages 500        # small
    .venv/bin/python bench/soak.py --json out.json --keep

Traffic (bench/traffic.py): the app, Twilio SMS, WhatsApp, Telegram and WeChat safe mode, each
sent and signed as the provider does, new senders and returning ones (repeats of the same
problem, second problems, follow-ups naming or editing the earlier message, byte-for-byte
provider retries). Acknowledgements and other replies go to a local fake of the providers' REST
APIs (bench/provider_sink.py) that records every request. Workers run as
bench/joblog_worker.py: the real worker, plus a line per job start and end, so the jobs a killed
worker held are known exactly. The job timeout is the default (GATEWAY_JOB_TIMEOUT_SECONDS 20,
so arq's in-progress key lives 30 s): nothing here shortens it.

A baseline phase with the same traffic and no kills runs first (``--baseline`` messages), so the
figures under fire come with a ratio to the same stack, same run, unharmed.

Checked at the end, after everything drained:

- every message acknowledged with a 2xx (a retried delivery is one message) is stored, processed,
  and in exactly one complaint's messages (a new complaint, a repeat merged into one, or a
  follow-up) — none lost, none twice; no complaint holds a message nobody sent;
- per complaint one acknowledgement; what the provider sink received, per (channel, recipient,
  text), is what the complaints record as sent — none twice, none missing (each reply that went
  twice is printed with how long after (or, by up to 50 ms, before: the request on its way) the
  provider first took it a worker was killed: a few ms is the at-least-once window for replies
  the README names as a known limit);
- every job a killed worker held was run again and finished; time from the kill to the re-run
  start and to the finish (max; the in-progress key's 30 s bounds the first).

Exit status 1 when a check fails (the evidence directory is then kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from stack import Cluster  # noqa: E402
from traffic import Traffic  # noqa: E402

PREFIX = "soak:"
PROVIDER_CHANNELS = {"twilio_sms", "whatsapp", "telegram", "wechat"}
IN_PROGRESS_S = 30.0  # arq: job timeout (default 20 s) + 10 s
POLL_S = 0.5  # GATEWAY_WORKER_POLL_SECONDS default


def pct(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, int(q / 100 * len(data)))] if data else float("nan")


# -- the killer ------------------------------------------------------------------------------


class Killer(threading.Thread):
    """SIGKILLs a random worker every uniform(lo, hi) seconds and starts a new one at once."""

    def __init__(self, cluster: Cluster, lo: float, hi: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.cluster, self.lo, self.hi = cluster, lo, hi
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.kills: list[dict] = []

    def run(self) -> None:
        while not self.stop_event.wait(self.rng.uniform(self.lo, self.hi)):
            i = self.rng.randrange(len(self.cluster.workers))
            pid, at = self.cluster.kill_worker(i)
            new_pid = self.cluster.restart_worker(i)
            self.kills.append({"slot": i, "pid": pid, "at": at, "replacement": new_pid})

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


# -- reading the evidence --------------------------------------------------------------------


def settle(cluster: Cluster, timeout: float) -> tuple[bool, list[str]]:
    """Until no message waits, no arq job is queued and no outbox entry is for a reply still
    waiting to go out. Answers (settled, outbox entries left for replies already delivered)."""
    r = cluster.r()
    deadline = time.monotonic() + timeout
    while True:
        members = [m.decode() for m in r.zrange(PREFIX + "outbox", 0, -1)]
        pipe = r.pipeline(transaction=False)
        for m in members:
            cid, _, rid = m.partition("|")
            pipe.hget(f"{PREFIX}delivery:{cid}", rid)
        states = pipe.execute()
        done = [m for m, st in zip(members, states) if st and json.loads(st).get("delivery") not in (None, "queued")]
        busy = r.zcard(PREFIX + "pending") + r.zcard(PREFIX + "arq:queue") + len(members) - len(done)
        if not busy:
            return True, done
        if time.monotonic() > deadline:
            return False, done
        time.sleep(0.5)


def read_joblogs(directory: Path) -> dict[int, list[tuple[str, str, float]]]:
    logs: dict[int, list[tuple[str, str, float]]] = {}
    for path in directory.glob("jobs.*"):
        entries = []
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                entries.append((parts[0], parts[1], int(parts[2]) / 1e6))
        logs[int(path.suffix[1:])] = entries
    return logs


def orphans_of(kills: list[dict], logs: dict[int, list[tuple[str, str, float]]], r: redis.Redis) -> dict:
    """Per kill, the jobs the killed process had started and not ended; when each was started
    again elsewhere and when it finally ended."""
    starts: dict[str, list[tuple[float, int]]] = defaultdict(list)
    ends: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for pid, entries in logs.items():
        for kind, job, t in entries:
            (starts if kind == "S" else ends)[job].append((t, pid))
    rows = []
    for kill in kills:
        open_jobs: Counter[str] = Counter()
        for kind, job, _ in logs.get(kill["pid"], []):
            open_jobs[job] += 1 if kind == "S" else -1
        for job, n in open_jobs.items():
            if n <= 0:
                continue
            claimed = max(t for kind, j, t in logs[kill["pid"]] if kind == "S" and j == job)
            later = sorted((t, pid) for t, pid in starts[job] if pid != kill["pid"] and t > kill["at"] - 0.001)
            # the re-run's end: the first end line after it (a later retry of the same job would
            # have its own start line; a job that keeps being re-queued afterwards, e.g. a send
            # left in the outbox, does not move this)
            done = min((t for t, pid in ends[job] if pid != kill["pid"] and later and t >= later[0][0]), default=None)
            queued = r.zscore(PREFIX + "arq:queue", job) is not None
            gone = not queued and not r.exists(f"arq:job:{job}")
            row = {"job": job, "kill_at": kill["at"], "killed_pid": kill["pid"],
                   "claimed_before_kill_s": round(kill["at"] - claimed, 3),
                   "picked_up_s": round(later[0][0] - kill["at"], 3) if later else None,
                   "picked_up_after_claim_s": round(later[0][0] - claimed, 3) if later else None,
                   "picked_up_by": later[0][1] if later else None,
                   "finished_s": round(done - kill["at"], 3) if done is not None else None,
                   "still_queued": queued}
            if not later:
                # the process may have finished the job (arq's final MULTI) and died before its
                # "E" line: then the job is gone from the queue and nothing is left to do
                row["state"] = "finished_before_kill" if gone else "stuck"
            elif done is not None:
                row["state"] = "rerun"
            else:
                # re-run, and the process that re-ran it was killed too before its "E" line: that
                # kill's own row follows the job further; gone from the queue = it was finished
                row["state"] = "rerun_end_line_lost" if gone else "rerun_unfinished"
            rows.append(row)
    picked = [x["picked_up_s"] for x in rows if x["picked_up_s"] is not None]
    after_claim = [x["picked_up_after_claim_s"] for x in rows if x["picked_up_after_claim_s"] is not None]
    finished = [x["finished_s"] for x in rows if x["finished_s"] is not None and x["state"] == "rerun"]
    return {
        "orphaned_jobs": sum(1 for x in rows if x["state"] != "finished_before_kill"),
        "finished_before_kill_line": sum(1 for x in rows if x["state"] == "finished_before_kill"),
        "by_kind": dict(Counter(x["job"].split(":")[-2] if x["job"].count(":") >= 1 else x["job"]
                                for x in rows if x["state"] != "finished_before_kill")),
        "max_pickup_s": max(picked, default=None), "p50_pickup_s": pct(picked, 50) if picked else None,
        "max_pickup_after_claim_s": max(after_claim, default=None),
        "picked_up_within_30s_of_kill": sum(1 for x in picked if x <= 30.0),
        "picked_up_within_claim_plus_30_5s": sum(1 for x in after_claim if x <= IN_PROGRESS_S + POLL_S),
        "p99_pickup_s": pct(picked, 99) if picked else None,
        "max_finish_s": max(finished, default=None),
        "stuck": [x for x in rows if x["state"] in ("stuck", "rerun_unfinished")],
        # arq's in-progress key (job timeout + 10 s = 30 s) is set at the claim, and the re-run
        # starts at the next poll after it expires (poll 0.5 s): so the bound is claim + 30.5 s
        "late": [x for x in rows if (x["picked_up_after_claim_s"] or 0) > IN_PROGRESS_S + POLL_S],
        "finished_over_30s_after_kill": sum(1 for x in rows if (x["finished_s"] or 0) > 30.0),
        "rows": rows,
    }


def check(cluster: Cluster, traffic: Traffic) -> dict:
    """The end-of-run checks over the kill phase's and the baseline's messages together."""
    r = cluster.r()
    sent = traffic.sent
    # 1. each acknowledged logical message → its message id (through the adapter's idempotency key)
    acked_scopes = {s.scope for s in sent if s.ok}
    pipe = r.pipeline(transaction=False)
    scopes = sorted(acked_scopes)
    for scope in scopes:
        pipe.get(f"{PREFIX}idem:{scope}")
    mids: dict[str, str] = {}
    lost_no_record = []
    for scope, value in zip(scopes, pipe.execute()):
        if value is None:
            lost_no_record.append(scope)
        else:
            mids[scope] = value.decode().split("|", 1)[0]
    app_mismatch = [s.scope for s in sent if s.ok and s.channel == "app" and mids.get(s.scope) not in (None, s.message_id)]
    # 2. each message's record
    pipe = r.pipeline(transaction=False)
    for mid in mids.values():
        pipe.hmget(f"{PREFIX}msg:{mid}", "status", "complaint_id")
    records = {mid: (st.decode() if st else None, cid.decode() if cid else None)
               for mid, (st, cid) in zip(mids.values(), pipe.execute())}
    not_processed = {mid: st for mid, (st, _) in records.items() if st != "processed"}
    # 3. complaints: where did each message go
    from router.store import ComplaintStore

    async def load_all() -> list:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(cluster.redis_url)
        store = ComplaintStore(PREFIX)
        store.bind(client)
        ids = [k.decode().removeprefix(PREFIX + "complaint:") async for k in client.scan_iter(
            match=PREFIX + "complaint:*", count=1000)]
        out = []
        for n in range(0, len(ids), 500):
            out.extend(await store.get_many(ids[n:n + 500]))
        await client.aclose()
        return out

    complaints = asyncio.run(load_all())
    where: dict[str, list[str]] = defaultdict(list)
    for c in complaints:
        for m in c.messages:
            where[m.message_id].append(c.id)
    acked_mids = set(mids.values())
    in_none = sorted(mid for mid in acked_mids if not where.get(mid))
    in_many = {mid: cids for mid, cids in where.items() if len(cids) > 1}
    twice_in_one = {mid: cids for mid, cids in where.items() if len(cids) != len(set(cids))}
    wrong_complaint = [mid for mid in acked_mids if where.get(mid) and records[mid][1] not in where[mid]]
    phantom = sorted(mid for mid in where if mid not in acked_mids)
    case_numbers = Counter(c.case_number for c in complaints)
    # 4. acknowledgements and other replies: the complaints' record against what the sink got
    acks_per_complaint = Counter(sum(1 for x in c.replies if x.kind == "ack") for c in complaints)
    expected: Counter[tuple[str, str, str]] = Counter()
    kind_of: dict[tuple[str, str, str], str] = {}
    undelivered = []
    reply_kinds: Counter[str] = Counter()
    for c in complaints:
        for rep in c.replies:
            reply_kinds[rep.kind] += 1
            if rep.delivery not in ("sent", "delivered", "read"):
                undelivered.append({"complaint": c.id, "reply": rep.id, "kind": rep.kind, "delivery": rep.delivery,
                                    "error": getattr(rep, "error", None)})
                continue
            if rep.channel in PROVIDER_CHANNELS:
                to = (rep.to or c.contact).value
                expected[(rep.channel, to, rep.text)] += 1
                kind_of[(rep.channel, to, rep.text)] = rep.kind
    sink = cluster.sink_records()
    got: Counter[tuple[str, str, str]] = Counter((x["channel"], x["to"], x["text"]) for x in sink if "text" in x)
    sent_twice = {k: (got[k], expected.get(k, 0)) for k in got if got[k] > expected.get(k, 0)}
    never_sent = {k: (got.get(k, 0), n) for k, n in expected.items() if got.get(k, 0) < n}
    unknown_routes = [x for x in sink if x.get("channel") == "?"]
    acked_sents = [s for s in sent if s.ok]
    return {
        "requests": len(sent), "requests_2xx": len(acked_sents),
        "requests_not_2xx_after_tries": sum(1 for s in sent if not s.ok),
        "resent_by_provider_logic": sum(s.tries - 1 for s in sent),
        "statuses": dict(Counter(s.status for s in sent)),
        "kinds": dict(Counter(s.kind for s in sent)), "channels": dict(Counter(s.channel for s in sent)),
        "acknowledged_messages": len(acked_mids),
        "lost_no_intake_record": lost_no_record, "app_id_mismatch": app_mismatch,
        "not_processed": not_processed, "in_no_complaint": in_none, "in_several_complaints": in_many,
        "twice_in_one_complaint": twice_in_one, "complaint_differs_from_record": wrong_complaint,
        "phantom_messages": phantom,
        "complaints": len(complaints), "duplicate_case_numbers": [k for k, n in case_numbers.items() if n > 1],
        "acks_per_complaint": dict(acks_per_complaint), "reply_kinds": dict(reply_kinds),
        "undelivered_replies": undelivered,
        "sink_requests": len(sink), "sink_sent_more_than_recorded": [
            {"channel": k[0], "to": k[1], "text": k[2], "kind": kind_of.get(k, "?"), "sink": v[0], "recorded": v[1],
             "sink_times": sorted(x["t"] for x in sink if (x["channel"], x["to"], x.get("text")) == k)}
            for k, v in sent_twice.items()],
        "acks_sent_twice": sum(1 for k in sent_twice if kind_of.get(k) == "ack"),
        "repeat_acks_sent_twice": sum(1 for k in sent_twice if kind_of.get(k) == "repeat_ack"),
        "sink_missing": [{"channel": k[0], "to": k[1], "text": k[2][:60], "sink": v[0], "recorded": v[1]}
                         for k, v in never_sent.items()],
        "sink_unknown_routes": unknown_routes[:10],
    }


# -- the run ---------------------------------------------------------------------------------


async def phase(cluster: Cluster, traffic: Traffic, *, count: int, rate: float, label: str) -> dict:
    first = len(traffic.sent)
    started = time.time()
    last = [time.time()]

    backlog = [0]

    def tick(i: int) -> None:
        backlog[0] = max(backlog[0], cluster.pending())
        if time.time() - last[0] >= 10:
            last[0] = time.time()
            print(f"  [{label}] {i}/{count} sent, {cluster.pending()} waiting for a worker", flush=True)

    await traffic.run(cluster.gw_ports, rate=rate, count=count, on_tick=tick)
    sent_done = time.time()
    return {"first": first, "count": count, "started": started, "sent_done": sent_done,
            "send_seconds": sent_done - started, "max_backlog": backlog[0], "backlog_at_end": cluster.pending()}


def latency_to_done(traffic: Traffic, logs: dict, first: int, last: int) -> list[float]:
    """Acknowledged → its processing job's last end (the complaint or follow-up committed and the
    acknowledgement handed to the provider), in ms, for the app messages of a phase (their
    message id is in the answer)."""
    ends: dict[str, float] = {}
    for entries in logs.values():
        for kind, job, t in entries:
            if kind == "E" and "ingest:" in job:
                mid = job.split("ingest:", 1)[1]
                ends[mid] = max(ends.get(mid, 0), t)
    out = []
    for s in traffic.sent[first:last]:
        if s.ok and s.channel == "app" and s.kind != "retry" and s.message_id in ends:
            out.append((ends[s.message_id] - s.acked_at) * 1000)
    return out


def processed_by(logs: dict, t0: float, t1: float) -> int:
    """Messages whose processing job last ended within [t0, t1]."""
    ends: dict[str, float] = {}
    for entries in logs.values():
        for kind, job, t in entries:
            if kind == "E" and "ingest:" in job:
                ends[job] = max(ends.get(job, 0), t)
    return sum(1 for t in ends.values() if t0 <= t <= t1)


def summarise_phase(traffic: Traffic, ph: dict, logs: dict, drained_at: float) -> dict:
    sl = traffic.sent[ph["first"]:ph["first"] + ph["count"]]
    lat = [s.latency_ms for s in sl if s.ok]
    done = latency_to_done(traffic, logs, ph["first"], ph["first"] + ph["count"])
    return {"requests": len(sl), "ok": sum(1 for s in sl if s.ok), "send_seconds": round(ph["send_seconds"], 1),
            "until_drained_s": round(drained_at - ph["started"], 1),
            "throughput_msg_s": round(sum(1 for s in sl if s.ok) / max(0.001, drained_at - ph["started"]), 1),
            "offered_rate_msg_s": round(len(sl) / max(0.001, ph["send_seconds"]), 1),
            "processed_while_sending_msg_s": round(processed_by(logs, ph["started"], ph["sent_done"])
                                                   / max(0.001, ph["send_seconds"]), 1),
            "max_backlog": ph["max_backlog"], "backlog_at_end_of_sending": ph["backlog_at_end"],
            "ack_p50_ms": round(pct(lat, 50), 1), "ack_p99_ms": round(pct(lat, 99), 1),
            "ack_max_ms": round(pct(lat, 100), 1),
            "done_p50_ms": round(pct(done, 50), 1), "done_p99_ms": round(pct(done, 99), 1),
            "done_max_ms": round(pct(done, 100), 1), "done_samples": len(done)}


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    cluster = Cluster(tmp, gateways=args.gateways, workers=args.workers, fsync="always", joblog=True,
                      prefix=PREFIX, extra_env={"GATEWAY_CONTACT_RATE_PER_MINUTE": "0",
                                                "GATEWAY_CHANNEL_RATE_PER_SECOND": "0"})
    traffic = Traffic(seed=args.seed)
    result: dict = {"args": vars(args), "evidence_dir": str(tmp)}
    failed = True
    try:
        cluster.start()
        info = cluster.r().info("server")
        result["redis_version"] = info["redis_version"]
        # baseline: same stack, same traffic, nobody killed
        if args.baseline:
            print(f"baseline: {args.baseline} messages at {args.rate:.0f}/s, no kills", flush=True)
            base = asyncio.run(phase(cluster, traffic, count=args.baseline, rate=args.rate, label="baseline"))
            settle(cluster, 300)
            base_drained = time.time()
        print(f"soak: {args.messages} messages at {args.rate:.0f}/s into {args.gateways} gateways, "
              f"{args.workers} workers, one killed every {args.kill_min:g}-{args.kill_max:g} s", flush=True)
        killer = Killer(cluster, args.kill_min, args.kill_max, args.seed)
        killer.start()
        soak = asyncio.run(phase(cluster, traffic, count=args.messages, rate=args.rate, label="soak"))
        time.sleep(args.kill_tail)  # keep killing a little after the last request
        killer.stop()
        last_kill = max((k["at"] for k in killer.kills), default=time.time())
        print(f"  traffic done; {len(killer.kills)} kills; waiting for every job, orphan and outbox entry",
              flush=True)
        drained, leaked = settle(cluster, args.settle_timeout)
        drained_at = time.time()
        time.sleep(1)
        logs = read_joblogs(cluster.joblog_dir)
        checks = check(cluster, traffic)
        for doubled in checks["sink_sent_more_than_recorded"]:
            doubled["kill_after_first_send_ms"] = kill_after(killer.kills, float(doubled["sink_times"][0]))
        orphans = orphans_of(killer.kills, logs, cluster.r())
        soak_sum = summarise_phase(traffic, soak, logs, drained_at)
        result.update({
            "drained": drained, "kills": len(killer.kills), "seconds_after_last_kill_until_drained":
                round(drained_at - last_kill, 1),
            "soak": soak_sum, "checks": checks, "outbox_entries_of_delivered_replies": leaked,
            "orphans": {k: v for k, v in orphans.items() if k != "rows"},
        })
        if args.baseline:
            result["baseline"] = summarise_phase(traffic, base, logs, base_drained)
        (tmp / "orphans.json").write_text(json.dumps(orphans["rows"], indent=1))
        with open(tmp / "requests.jsonl", "w") as f:
            for x in traffic.sent:
                f.write(json.dumps({"i": x.i, "channel": x.channel, "kind": x.kind, "sender": x.sender,
                                    "scope": x.scope, "port": x.port, "status": x.status, "tries": x.tries,
                                    "acked_at": x.acked_at, "latency_ms": round(x.latency_ms, 2),
                                    "message_id": x.message_id}) + "\n")
        (tmp / "kills.json").write_text(json.dumps(killer.kills, indent=1))
        problems = {
            "lost (acknowledged, no record)": len(checks["lost_no_intake_record"]),
            "not processed": len(checks["not_processed"]),
            "in no complaint": len(checks["in_no_complaint"]),
            "in several complaints": len(checks["in_several_complaints"]),
            "twice in one complaint": len(checks["twice_in_one_complaint"]),
            "complaint differs from record": len(checks["complaint_differs_from_record"]),
            "phantom messages": len(checks["phantom_messages"]),
            "duplicate case numbers": len(checks["duplicate_case_numbers"]),
            "complaints with != 1 ack": sum(n for k, n in checks["acks_per_complaint"].items() if k != 1),
            "sent to provider more often than recorded": sum(x["sink"] - x["recorded"]
                                                              for x in checks["sink_sent_more_than_recorded"]),
            "recorded as sent, provider never got it": len(checks["sink_missing"]),
            "undelivered replies": len(checks["undelivered_replies"]),
            "outbox entries left for delivered replies": len(leaked),
            "orphans stuck": len(orphans["stuck"]),
            "orphans re-run later than claim + 30.5 s": len(orphans["late"]),
            "not drained": 0 if drained else 1,
        }
        result["problems"] = problems
        failed = any(problems.values())
        report(result)
    finally:
        cluster.stop()
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2, default=str, ensure_ascii=False))
        if failed or args.keep:
            print(f"evidence kept in {tmp} (sink.jsonl, requests.jsonl, joblog/, orphans.json, kills.json, redis/ AOF, processes.log)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


def reanalyse(directory: Path) -> None:
    """The orphan figures again from a kept evidence directory (its job logs, kills and AOF)."""
    import subprocess

    from intake import free_port

    with tempfile.TemporaryDirectory(prefix="soak-reanalyse-") as tmp:
        shutil.copytree(directory / "redis", Path(tmp) / "redis")
        port = free_port()
        proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                                 "127.0.0.1", "--dir", str(Path(tmp) / "redis"), "--appendonly", "yes", "--save", ""],
                                stdout=subprocess.DEVNULL)
        try:
            r = redis.Redis(port=port)
            for _ in range(300):
                try:
                    if r.ping() and r.info("persistence").get("loading") == 0:
                        break
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                time.sleep(0.05)
            kills = json.loads((directory / "kills.json").read_text())
            orphans = orphans_of(kills, read_joblogs(directory / "joblog"), r)
        finally:
            proc.terminate()
            proc.wait(10)
    rows = orphans.pop("rows")
    (directory / "orphans.reanalysed.json").write_text(json.dumps(rows, indent=1))
    print(json.dumps({k: v for k, v in orphans.items()}, indent=1, default=str))


#: A kill this long before a provider's receipt of a reply still explains it: the request was on
#: its way (written to the socket before the kill, read by the provider after it). Seen: 0.13 ms.
KILL_BEFORE_S = 0.05


def kill_after(kills: list[dict], at: float) -> float | None:
    """How long after ``at`` (a provider's receipt of a reply, its clock) the nearest kill came, in
    ms, negative for one up to ``KILL_BEFORE_S`` before it (None: none from then to 5 s after). A
    reply sent again after a kill a few ms around the provider's receipt is the at-least-once
    window for replies the README names (the sender killed between sending and the delivery
    record); one with no kill near it is not."""
    near = [k["at"] - at for k in kills if -KILL_BEFORE_S <= k["at"] - at <= 5]
    return round(min(near, key=abs) * 1000, 2) if near else None


def kill_said(gap: float | None) -> str:
    """``kill_after``'s answer in words."""
    if gap is None:
        return f"no kill from {KILL_BEFORE_S * 1000:.0f} ms before to 5 s after the provider first took it"
    if gap < 0:
        return f"a worker was killed {-gap} ms before the provider first took it (the request on its way)"
    return f"a worker was killed {gap} ms after the provider first took it"


def report(res: dict) -> None:
    s, c, o = res["soak"], res["checks"], res["orphans"]
    print("\n== soak ==")
    print(f"messages: {s['requests']} requests, {s['ok']} answered 2xx "
          f"({c['acknowledged_messages']} distinct acknowledged messages over both phases, "
          f"{c['kinds']} by kind)")
    print(f"kills: {res['kills']} (SIGKILL + restart); duration {s['until_drained_s']} s until everything "
          f"drained ({s['send_seconds']} s of sending); throughput: offered {s['offered_rate_msg_s']} msg/s, "
          f"processed while sending {s['processed_while_sending_msg_s']} msg/s, overall incl. the orphans' 30 s "
          f"tail {s['throughput_msg_s']} msg/s; backlog max {s['max_backlog']}, at end of sending "
          f"{s['backlog_at_end_of_sending']}")
    print(f"ack p50 {s['ack_p50_ms']} ms, p99 {s['ack_p99_ms']} ms; app message acknowledged -> processed: "
          f"p50 {s['done_p50_ms']} ms, p99 {s['done_p99_ms']} ms, max {s['done_max_ms']} ms")
    if "baseline" in res:
        b = res["baseline"]
        print(f"baseline (no kills, same run): {b['ok']} messages, ack p99 {b['ack_p99_ms']} ms, "
              f"acknowledged -> processed p50 {b['done_p50_ms']} p99 {b['done_p99_ms']} max {b['done_max_ms']} ms; "
              f"ratio soak/baseline: ack p99 {s['ack_p99_ms'] / max(b['ack_p99_ms'], 0.01):.2f}, "
              f"processed p50 {s['done_p50_ms'] / max(b['done_p50_ms'], 0.01):.2f}")
    print(f"orphaned jobs: {o['orphaned_jobs']} ({o['by_kind']}); picked up again after p50 {o['p50_pickup_s']} s, "
          f"p99 {o['p99_pickup_s']} s, "
          f"max {o['max_pickup_s']} s after the kill (max {o['max_pickup_after_claim_s']} s after the killed "
          f"worker's claim); finished max {o['max_finish_s']} s after the kill "
          f"({o['finished_over_30s_after_kill']} finished more than 30 s after it); stuck {len(o['stuck'])}; "
          f"re-run later than claim + 30.5 s: {len(o['late'])}; within 30 s of the kill: "
          f"{o['picked_up_within_30s_of_kill']}")
    print(f"complaints: {c['complaints']}; acks per complaint {c['acks_per_complaint']}; replies {c['reply_kinds']}; "
          f"provider sink got {c['sink_requests']} requests")
    print(f"losses: {len(c['lost_no_intake_record']) + len(c['not_processed']) + len(c['in_no_complaint'])}; "
          f"duplicates: {len(c['in_several_complaints']) + len(c['twice_in_one_complaint'])} messages, "
          f"{sum(x['sink'] - x['recorded'] for x in c['sink_sent_more_than_recorded'])} provider sends "
          f"({c['acks_sent_twice']} acknowledgements and {c['repeat_acks_sent_twice']} repeat acknowledgements "
          f"reached the provider more often than recorded); outbox entries left behind for delivered replies: "
          f"{len(res['outbox_entries_of_delivered_replies'])}")
    for doubled in c["sink_sent_more_than_recorded"]:
        times = [float(t) for t in doubled["sink_times"]]
        gap = doubled.get("kill_after_first_send_ms")
        print(f"  {doubled['kind']} on {doubled['channel']} reached the provider {doubled['sink']} times, recorded "
              f"{doubled['recorded']}: "
              + kill_said(gap)
              + f"; again after {', '.join(f'{t - times[0]:.1f}' for t in times[1:])} s")
    bad = {k: v for k, v in res["problems"].items() if v}
    print("RESULT:", "all checks passed" if not bad else f"FAILED {bad}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=None, help="messages without kills first (default 10%%)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second, all gateways together")
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-min", type=float, default=2.0)
    parser.add_argument("--kill-max", type=float, default=5.0)
    parser.add_argument("--kill-tail", type=float, default=3.0, help="seconds of killing after the last request")
    parser.add_argument("--settle-timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep the evidence directory even when all passes")
    parser.add_argument("--reanalyse", metavar="DIR", help="only recompute the orphan figures of a kept run")
    args = parser.parse_args()
    if args.reanalyse:
        reanalyse(Path(args.reanalyse))
        return
    if args.baseline is None:
        args.baseline = max(100, args.messages // 10)
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
