"""`python -m deploy.iam render` as an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.unit.test_iam_policies import resources


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GAS_")}
    return subprocess.run(
        [sys.executable, "-m", "deploy.iam", *args],
        cwd=ROOT,
        env={**environ, **env},
        capture_output=True,
        text=True,
    )


def test_render_names_the_resources_of_the_sites_configuration(tmp_path: Path) -> None:
    # Given a site that renamed its annotations table and gave the queue as a URL
    site = tmp_path / "site.ini"
    queue_url = "https://sqs.eu-west-1.amazonaws.com/210987654321/prod-archive"
    site.write_text(
        f"[gas]\nannotations_table = prod-annotations\n[archive]\nqueue = {queue_url}\n"
    )
    # When the archive policy is rendered with that configuration
    result = run_cli(
        "render",
        "archive",
        "--account",
        "123456789012",
        "--region",
        "eu-west-1",
        "--config",
        str(site),
        GAS_GAS_RESULTS_BUCKET="prod-results",
    )
    # Then it names the site's resources, from the .ini and from the environment alike
    assert result.returncode == 0, result.stderr
    arns = resources(json.loads(result.stdout))
    assert "arn:aws:dynamodb:eu-west-1:123456789012:table/prod-annotations" in arns
    assert "arn:aws:sqs:eu-west-1:210987654321:prod-archive" in arns
    assert "arn:aws:sqs:eu-west-1:210987654321:prod-archive-dlq" in arns
    assert "arn:aws:s3:::prod-results/*" in arns
    assert not any("gas-annotations" in arn or "gas-results" in arn for arn in arns)


def test_render_refuses_a_malformed_account_or_a_bad_config(tmp_path: Path) -> None:
    bad_account = run_cli("render", "notify", "--account", "12345", "--region", "us-east-1")
    assert bad_account.returncode == 2 and "12 digits" in bad_account.stderr
    bad_config = run_cli(
        "render",
        "notify",
        "--account",
        "123456789012",
        "--region",
        "us-east-1",
        GAS_NOTIFY_QUEU="typo",
    )
    assert bad_config.returncode == 2 and "GAS_NOTIFY_QUEU" in bad_config.stderr


KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_render_with_a_kms_key_lets_the_utility_use_it_through_s3_only() -> None:
    # Given buckets whose default encryption is a customer-managed key
    render = ("render", "--account", "123456789012", "--region", "eu-west-1", "--kms-key", KEY)
    # When the policies of thaw (reads archives, writes results) and notify are rendered
    thaw = run_cli(render[0], "thaw", *render[1:], GAS_GAS_ARCHIVE_BACKEND="s3")
    notify = run_cli(render[0], "notify", *render[1:])
    # Then thaw may decrypt and make data keys with it, through S3; notify, touching no
    # object, is given nothing
    assert thaw.returncode == 0, thaw.stderr
    assert [s for s in json.loads(thaw.stdout)["Statement"] if s["Sid"] == "KmsKey"] == [
        {
            "Sid": "KmsKey",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": KEY,
            "Condition": {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}},
        }
    ]
    assert notify.returncode == 0 and "kms:" not in notify.stdout


def test_render_refuses_a_kms_key_that_is_not_a_key_arn() -> None:
    result = run_cli(
        "render",
        "thaw",
        "--account",
        "123456789012",
        "--region",
        "us-east-1",
        "--kms-key",
        "alias/acme-s3",
    )
    assert result.returncode == 2 and "--kms-key" in result.stderr
