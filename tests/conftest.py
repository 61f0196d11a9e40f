"""Fixtures shared by unit tests (moto in process) and integration tests (the stack as a server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from util.helpers import COMPLETED, Annotations, Aws
from util.local import glacier as glacier_emulation
from util.local.stack import CREDENTIALS, create_resources, launch, utility_config_files
from util.util_config import Config, load

ROOT = Path(__file__).resolve().parents[1]
# "Now" for unit tests, whose handlers get it as their clock; integration tests share it with
# real processes, so it must be the real time, not a fixed date.
NOW = float(int(time.time()))


def wait_for(condition: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, and nothing from the developer's own AWS setup."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "GAS_")):
            monkeypatch.delenv(name)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@dataclass
class Stack:
    """The local resources and clients to look at them with."""

    config: Config
    aws: Aws

    def client(self, service: str):
        return self.aws.client(service)

    def queue_url(self, name: str) -> str:
        return self.aws.queue_url(name)


@pytest.fixture
def stack(aws_env: None) -> Iterator[Stack]:
    """Every resource of the config, in moto in process, with the Glacier emulation."""
    glacier_emulation.install()
    with mock_aws():
        config = load(None, utility_config_files())
        aws = Aws(config)
        create_resources(aws, config)
        yield Stack(config, aws)


@dataclass
class Server(Stack):
    """A `python -m util.local serve` process and the environment to reach it."""

    process: subprocess.Popen
    env: dict[str, str]


@pytest.fixture
def server(aws_env: None) -> Iterator[Server]:
    """A fresh local stack server for one test."""
    process, env = launch()
    os.environ.update(env)  # undone by aws_env's monkeypatch
    config = load(None, utility_config_files())
    yield Server(config, Aws(config), process, env)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=10)


# -- looking into the vault through the Glacier API, as an operator would ----------------------

def _finished_job(stack: Stack, parameters: dict[str, str]) -> str:
    glacier = stack.client("glacier")
    vault = stack.config.gas.vault
    job_id = glacier.initiate_job(vaultName=vault, jobParameters=parameters)["jobId"]
    wait_for(lambda: glacier.describe_job(vaultName=vault, jobId=job_id)["Completed"],
             timeout=30, what=f"Glacier job {job_id}")
    return job_id


def archived_bytes(stack: Stack, archive_id: str) -> bytes:
    """An archive's content, retrieved with an Expedited archive-retrieval job."""
    job_id = _finished_job(stack, {"Type": "archive-retrieval", "ArchiveId": archive_id,
                                   "Tier": "Expedited"})
    return stack.client("glacier").get_job_output(vaultName=stack.config.gas.vault,
                                                  jobId=job_id)["body"].read()


def vault_archive_description(stack: Stack, archive_id: str) -> str:
    """An archive's description, from an inventory of the vault."""
    job_id = _finished_job(stack, {"Type": "inventory-retrieval", "Tier": "Expedited"})
    inventory = json.load(stack.client("glacier").get_job_output(
        vaultName=stack.config.gas.vault, jobId=job_id)["body"])
    [entry] = [a for a in inventory["ArchiveList"] if a["ArchiveId"] == archive_id]
    return entry["ArchiveDescription"]


def vault_archive_count(stack: Stack) -> int:
    return stack.client("glacier").describe_vault(
        vaultName=stack.config.gas.vault)["NumberOfArchives"]


# -- jobs as the web app and the annotator leave them ------------------------------------------

def put_job(stack: Stack, job_id: str = "j1", user_id: str = "u-alice", size: int = 1000,
            complete_time: float = NOW - 3600, **overrides) -> bytes:
    """A COMPLETED job with its result file in the results bucket, as the annotator leaves it."""
    data = os.urandom(size)
    key = f"gas/{user_id}/{job_id}~sample.annot.vcf"
    bucket = stack.config.gas.results_bucket
    stack.client("s3").put_object(Bucket=bucket, Key=key, Body=data)
    item = {"job_id": job_id, "user_id": user_id, "job_status": COMPLETED,
            "input_file_name": "sample.vcf", "submit_time": int(complete_time) - 60,
            "complete_time": int(complete_time), "s3_results_bucket": bucket,
            "s3_key_result_file": key, "s3_key_log_file": key + ".log"}
    item.update(overrides)
    Annotations(stack.aws, stack.config.gas.annotations_table).put(item)
    return data


def job(stack: Stack, job_id: str = "j1") -> dict:
    return Annotations(stack.aws, stack.config.gas.annotations_table).get(job_id)


def result_exists(stack: Stack, job_id: str = "j1") -> bool:
    item = job(stack, job_id)
    listing = stack.client("s3").list_objects_v2(Bucket=stack.config.gas.results_bucket,
                                                 Prefix=item["s3_key_result_file"])
    return listing.get("KeyCount", 0) > 0
