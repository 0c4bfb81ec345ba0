"""Everything the gateway keeps in Redis. ``ComplaintStore`` is the one object callers hold; each
concern lives in a module of its own:

- ``keys``: every key name (``Keys``; channel plugins' own keys under ``keys.plugin(name, ...)``);
- ``scripts``: the Lua scripts; ``codec``: how a complaint is stored;
- ``messages``: intake, message state; ``preparing``: loading a message with its customer resolved;
- ``complaints``: opening, reading, changing and listing complaints;
- ``queues``: skill queues, claims and leases, first-response due times;
- ``deliveries``: the outbox, delivery states, provider ids, replica waits;
- ``quarantine``; ``workers``: heartbeats, jobs, stale messages.

Durability rules:
- intake is one Lua script: idempotency check, message record, pending set and the arq job
  are written together or not at all, so a 202 means the message *and* its job are stored;
- every later change is a WATCH/MULTI transaction that re-reads what it changes, so a worker
  retry or two agents at once cannot double-apply it; what is kept beside a complaint
  (``delivery:<cid>``: its replies' delivery states, its incident links) is written by scripts
  that only move it forward, and merged in whenever the complaint is read;
- jobs that must follow a change (send a reply, tell listeners) are written in the same
  transaction as the change.
"""

from __future__ import annotations

from normalizer.ids import dt_to_ms, ms_to_dt, new_id, now_ms
from normalizer.schema import ComplaintStatus
from plugins.contract import IntakeOutcome
from router.store.base import JOB_EXPIRES_MS, Conflict, NotFound, PlannedJob, StoreBase, TxEffects, job_bytes
from router.store.codec import COMPRESSED, INCIDENT_LINK, decode_complaint, encode_complaint, encode_incident_link
from router.store.complaints import Change, Complaints, is_open
from router.store.deliveries import DELIVERY_RANK, OUTBOUND_TTL_S, OUTBOX_GRACE_MS, Deliveries
from router.store.keys import ARQ_JOB_PREFIXES, Keys, job_key
from router.store.messages import IDEMPOTENCY_TTL_S, RAW_TTL_S, Messages, body_hash, ingest_job, ingest_job_bytes
from router.store.preparing import Preparing
from router.store.quarantine import Quarantine
from router.store.queues import DEADLINE_NEAR_MS, Queues, queue_score
from router.store.workers import Workers


class ComplaintStore(Messages, Preparing, Complaints, Queues, Deliveries, Quarantine, Workers, StoreBase):
    """Reads and writes messages, complaints, queues and leases (``ComplaintStore(prefix)``, then
    ``bind(redis)``)."""


__all__ = [
    "ARQ_JOB_PREFIXES",
    "COMPRESSED",
    "Change",
    "ComplaintStore",
    "ComplaintStatus",
    "Conflict",
    "DEADLINE_NEAR_MS",
    "DELIVERY_RANK",
    "IDEMPOTENCY_TTL_S",
    "INCIDENT_LINK",
    "IntakeOutcome",
    "JOB_EXPIRES_MS",
    "Keys",
    "NotFound",
    "OUTBOUND_TTL_S",
    "OUTBOX_GRACE_MS",
    "PlannedJob",
    "RAW_TTL_S",
    "TxEffects",
    "body_hash",
    "decode_complaint",
    "dt_to_ms",
    "encode_complaint",
    "encode_incident_link",
    "is_open",
    "ingest_job",
    "ingest_job_bytes",
    "job_bytes",
    "job_key",
    "ms_to_dt",
    "new_id",
    "now_ms",
    "queue_score",
]
