"""`python -m util.local serve` applies its [local] settings to the Glacier emulation."""

from __future__ import annotations

import json

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from localaws.glacier import NOTIFICATION_SUBJECT
from tests.conftest import Server, wait_for

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


@pytest.fixture
def short_lived(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """[local] settings for the server's process: request this fixture before `server`."""
    monkeypatch.setenv("GAS_LOCAL_INVENTORY_DELAY_SECONDS", "3600")
    monkeypatch.setenv("GAS_LOCAL_DAY_SECONDS", "1")
    monkeypatch.setenv("GAS_LOCAL_STANDARD_SECONDS", "0")


def test_serve_applies_inventory_delay_and_job_lifetime(short_lived: None, server: Server) -> None:
    # Given a stack served whose vault has its first inventory in an hour, and days of 1 s
    vault = server.config.gas.vault
    glacier = server.aws.session.client("glacier", config=NO_RETRIES)
    archive_id = glacier.upload_archive(vaultName=vault, body=b"result")["archiveId"]

    # Then an inventory retrieval is refused, and the vault has no inventory yet
    with pytest.raises(ClientError) as excinfo:
        glacier.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval"})
    assert excinfo.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert "LastInventoryDate" not in glacier.describe_vault(vaultName=vault)

    # When a retrieval completes, then it is forgotten a day (1 s) later
    job_id = glacier.initiate_job(
        vaultName=vault, jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id}
    )["jobId"]
    assert glacier.get_job_output(vaultName=vault, jobId=job_id)["body"].read() == b"result"
    wait_for(
        lambda: not glacier.list_jobs(vaultName=vault)["JobList"],
        timeout=10,
        what="the job to be forgotten",
    )
    with pytest.raises(ClientError) as excinfo:
        glacier.describe_job(vaultName=vault, jobId=job_id)
    assert excinfo.value.response["Error"]["Code"] == "ResourceNotFoundException"

    # And deleting the archive twice succeeds both times
    for _ in range(2):
        glacier.delete_archive(vaultName=vault, archiveId=archive_id)
