"""A message's job has no job key (router/store/messages.py): the worker makes the bytes arq reads
from the job's id and score, the same bytes a job key would have held."""

from __future__ import annotations

from arq.jobs import deserialize_job, serialize_job

from router.store import Keys, ingest_job_bytes


def test_the_bytes_are_arqs_for_the_message_job() -> None:
    made = ingest_job_bytes("ingest:msg_1k8abc", "", 1_796_164_215_606)
    assert made == serialize_job("process_message", ("msg_1k8abc",), {}, None, 1_796_164_215_606)
    job = deserialize_job(made)
    assert (job.function, job.args, job.kwargs) == ("process_message", ("msg_1k8abc",), {})
    assert job.enqueue_time.timestamp() * 1000 == 1_796_164_215_606


def test_a_hash_tagged_desk_s_message_job() -> None:
    k = Keys("{desk7}:")
    made = ingest_job_bytes(k.job_id("ingest:msg_1"), k.tag, 5)
    assert made is not None and deserialize_job(made).args == ("msg_1",)


def test_other_jobs_have_their_own_keys() -> None:
    k = Keys("{desk7}:")
    assert ingest_job_bytes("send:rep_1", "", 5) is None
    assert ingest_job_bytes("ingest:", "", 5) is None
    assert ingest_job_bytes("{other}ingest:msg_1", k.tag, 5) is None  # another desk's


def test_a_message_id_of_a_plugin_s_own_making() -> None:
    """Whatever id a channel plugin gives its messages; a message queued again under an id of its
    own (``ingest:<id>:split``, with a job key) read from its id runs for no message: nothing."""
    made = ingest_job_bytes("ingest:wa:wamid.HBg=:1", "", 5)
    assert made is not None and deserialize_job(made).args == ("wa:wamid.HBg=:1",)
