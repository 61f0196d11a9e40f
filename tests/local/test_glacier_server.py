"""`python -m util.local serve` applies its [local] settings to the Glacier emulation."""

from __future__ import annotations

import json

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import Server, wait_for
from util.local.glacier import NOTIFICATION_SUBJECT

NO_RETRIES = Config(retries={"total_max_attempts": 1})


@pytest.fixture
def local_settings(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """[local] settings for the server's process: request this fixture before `server`."""
    monkeypatch.setenv("GAS_LOCAL_EXPEDITED_CAPACITY", "false")
    monkeypatch.setenv("GAS_LOCAL_STANDARD_SECONDS", "0")


def test_serve_applies_local_settings_and_announces_on_the_thaw_queue(
    local_settings: None, server: Server
) -> None:
    # Given a stack served with no Expedited capacity and instant Standard retrievals
    vault = server.config.gas.vault
    glacier = server.aws.session.client("glacier", config=NO_RETRIES)
    archive_id = glacier.upload_archive(vaultName=vault, body=b"result")["archiveId"]

    # When an Expedited retrieval is initiated, then it is refused
    with pytest.raises(ClientError) as excinfo:
        glacier.initiate_job(
            vaultName=vault,
            jobParameters={
                "Type": "archive-retrieval",
                "ArchiveId": archive_id,
                "Tier": "Expedited",
            },
        )
    assert excinfo.value.response["Error"]["Code"] == "InsufficientCapacityException"

    # When a Standard one announced on the thaw topic is initiated
    job_id = glacier.initiate_job(
        vaultName=vault,
        jobParameters={
            "Type": "archive-retrieval",
            "ArchiveId": archive_id,
            "Tier": "Standard",
            "SNSTopic": server.aws.topic_arn(server.config.gas.thaw_topic),
            "Description": json.dumps({"job_id": "j1"}),
        },
    )["jobId"]

    # Then its completion notice reaches the thaw queue through the topic's subscription
    url = server.queue_url(server.config.thaw.queue)
    messages = wait_for(
        lambda: (
            server.client("sqs").receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages")
        ),
        timeout=15,
        what="the notice",
    )
    envelope = json.loads(messages[0]["Body"])
    notice = json.loads(envelope["Message"])
    assert envelope["Subject"] == NOTIFICATION_SUBJECT
    assert (notice["JobId"], notice["StatusCode"], notice["JobDescription"]) == (
        job_id,
        "Succeeded",
        json.dumps({"job_id": "j1"}),
    )
