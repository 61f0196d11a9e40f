"""deploy/iam: the shipped JSON policies, and rendering them for an account, region and config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.iam import HERE, TEMPLATES, render, template
from tests.conftest import ROOT


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_json_files_are_the_policies_of_the_default_configuration(name: str) -> None:
    # Regenerate with `python -m deploy.iam write` after changing deploy/iam/__init__.py.
    assert (HERE / f"{name}.json").read_text() == template(name)


def test_every_json_file_is_a_template() -> None:
    assert sorted(p.stem for p in HERE.glob("*.json")) == sorted(TEMPLATES)


def resources(policy: dict) -> list[str]:
    return [r for s in policy["Statement"]
            for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_render_fills_in_account_and_region_everywhere(name: str) -> None:
    text = render((HERE / f"{name}.json").read_text(), "123456789012", "eu-west-1")
    assert "${" not in text
    for arn in resources(json.loads(text)):
        service = arn.split(":")[2] if arn != "*" else "*"
        if service in ("sqs", "sns", "dynamodb", "glacier", "ses"):
            assert arn.split(":")[3:5] == ["eu-west-1", "123456789012"], arn


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GAS_")}
    return subprocess.run([sys.executable, "-m", "deploy.iam", *args], cwd=ROOT,
                          env={**environ, **env}, capture_output=True, text=True)


def test_render_names_the_resources_of_the_sites_configuration(tmp_path: Path) -> None:
    # Given a site that renamed its annotations table and gave the queue as a URL
    site = tmp_path / "site.ini"
    queue_url = "https://sqs.eu-west-1.amazonaws.com/210987654321/prod-archive"
    site.write_text(f"[gas]\nannotations_table = prod-annotations\n[archive]\nqueue = {queue_url}\n")
    # When the archive policy is rendered with that configuration
    result = run_cli("render", "archive", "--account", "123456789012", "--region", "eu-west-1",
                     "--config", str(site), GAS_GAS_RESULTS_BUCKET="prod-results")
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
    bad_config = run_cli("render", "notify", "--account", "123456789012", "--region",
                         "us-east-1", GAS_NOTIFY_QUEU="typo")
    assert bad_config.returncode == 2 and "GAS_NOTIFY_QUEU" in bad_config.stderr


def test_the_s3_back_end_needs_no_vault_and_the_vault_no_archive_bucket() -> None:
    for name, utility_environ in TEMPLATES.items():
        text = (HERE / f"{name}.json").read_text()
        if utility_environ[1].get("GAS_GAS_ARCHIVE_BACKEND") == "s3":
            assert "glacier:" not in text and "gas-archive-objects" in text, name
        else:
            assert "gas-archive-objects" not in text, name
