"""`util/notify/notify.py` as a real process against the local stack server."""

from __future__ import annotations

import json
from pathlib import Path

from localaws.ses import sent_emails
from tests.conftest import (
    Server,
    UtilityProcess,
    dead_letter_reasons,
    job,
    put_job,
    run_once,
    wait_for,
)
from util.schema import FAILED, NOTIFIED_TIME


def publish(server: Server, *messages: str | dict) -> None:
    """Publish on the job-results topic, as the annotator does; SNS wraps each in its envelope."""
    topic = server.aws.topic_arn(server.config.gas.job_results_topic)
    for message in messages:
        text = message if isinstance(message, str) else json.dumps(message)
        server.client("sns").publish(TopicArn=topic, Message=text)


def results(job_id: str, user_id: str, status: str = "COMPLETED") -> dict:
    return {"job_id": job_id, "user_id": user_id, "job_status": status}


def emails(server: Server) -> list[dict]:
    return sent_emails(server.env["AWS_ENDPOINT_URL"])


def test_each_finished_job_published_is_emailed_once(server: Server, tmp_path: Path) -> None:
    # Given three finished jobs of three users, one of them failed
    users = {"j1": "u-alice", "j2": "u-bob", "j3": "u-carol"}
    for job_id, user_id in users.items():
        put_job(
            server,
            job_id=job_id,
            user_id=user_id,
            input_file_name=f"{job_id}.vcf",
            **({"job_status": FAILED} if job_id == "j3" else {}),
        )
    # When the annotator publishes their results and the notify utility drains its queue
    publish(
        server, results("j1", "u-alice"), results("j2", "u-bob"), results("j3", "u-carol", FAILED)
    )
    worker = run_once("notify", tmp_path)
    # Then each user got one e-mail about their own job, linking to its page
    sent = {mail["to"][0]: mail for mail in emails(server)}
    assert len(emails(server)) == 3 and sorted(sent) == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
    ]
    for job_id, user_id in users.items():
        mail = sent[f"{user_id[2:]}@example.com"]
        assert mail["source"] == server.config.notify.sender
        verb = "failed" if job_id == "j3" else "is ready"
        assert mail["subject"] == f"GAS: your annotation of {job_id}.vcf {verb}"
        assert f'href="http://localhost:5000/annotations/{job_id}"' in mail["body"]
        assert NOTIFIED_TIME in job(server, job_id)
    assert worker.log.count("receives=1 outcome=done") == 3, worker.log


def test_poison_messages_go_to_the_dead_letter_queue_and_the_worker_goes_on(
    server: Server, tmp_path: Path
) -> None:
    # Given a running notify worker
    put_job(server)
    worker = UtilityProcess("notify", tmp_path / "notify.log")
    # When poison is published before a good message
    publish(
        server,
        "{not json",
        results("nope", "u-alice"),
        results("j1", "u-mallory"),
        results("j1", "u-alice"),
    )
    # Then the good one is e-mailed, the poison is in the dead-letter queue with its reason
    wait_for(lambda: emails(server), timeout=30, what="the e-mail of j1")
    reasons = dead_letter_reasons(server, server.config.notify.queue, 3)
    assert reasons[0].startswith("SNS Message is not JSON")
    assert reasons[1] == "unknown job nope"
    assert reasons[2] == "user u-mallory does not own job j1"
    assert [m["to"] for m in emails(server)] == [["alice@example.com"]]
    # And the worker is still alive, and stops cleanly on SIGTERM
    assert worker.process.poll() is None, "the worker must survive poison messages"
    assert worker.stop() == 0, worker.log
