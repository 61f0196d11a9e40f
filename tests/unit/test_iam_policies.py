"""deploy/iam: the shipped JSON policies, and rendering them for an account, region and config."""

from __future__ import annotations

import json

import pytest

from deploy.iam import HERE, TEMPLATES, UTILITIES, kms_actions, load_config, render, template


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_json_files_are_the_policies_of_the_default_configuration(name: str) -> None:
    # Regenerate with `python -m deploy.iam write` after changing deploy/iam/__init__.py.
    assert (HERE / f"{name}.json").read_text() == template(name)


def test_every_json_file_is_a_template() -> None:
    assert sorted(p.stem for p in HERE.glob("*.json")) == sorted(TEMPLATES)


def resources(policy: dict) -> list[str]:
    return [
        r
        for s in policy["Statement"]
        for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    ]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_render_fills_in_account_and_region_everywhere(name: str) -> None:
    text = render((HERE / f"{name}.json").read_text(), "123456789012", "eu-west-1")
    assert "${" not in text
    for arn in resources(json.loads(text)):
        service = arn.split(":")[2] if arn != "*" else "*"
        if service in ("sqs", "sns", "dynamodb", "glacier", "ses"):
            assert arn.split(":")[3:5] == ["eu-west-1", "123456789012"], arn


def test_the_s3_back_end_needs_no_vault_and_the_vault_no_archive_bucket() -> None:
    for name, utility_environ in TEMPLATES.items():
        text = (HERE / f"{name}.json").read_text()
        if utility_environ[1].get("GAS_GAS_ARCHIVE_BACKEND") == "s3":
            assert "glacier:" not in text and "gas-archive-objects" in text, name
        else:
            assert "gas-archive-objects" not in text, name


DECRYPT, BOTH = ["kms:Decrypt"], ["kms:Decrypt", "kms:GenerateDataKey"]


@pytest.mark.parametrize(
    "backend, expected",
    [
        (
            "vault",
            {
                "archive": {"gas-results": DECRYPT},
                "restore": {},
                "thaw": {"gas-results": BOTH},
                "notify": {},
                "reconcile": {"gas-results": BOTH},
                "ann_load": {"gas-inputs": BOTH},
            },
        ),
        (
            "s3",
            {
                "archive": {"gas-results": DECRYPT, "gas-archive-objects": BOTH},
                "restore": {"gas-archive-objects": DECRYPT},
                "thaw": {"gas-results": BOTH, "gas-archive-objects": DECRYPT},
                "notify": {},
                "reconcile": {"gas-results": BOTH, "gas-archive-objects": DECRYPT},
                "ann_load": {"gas-inputs": BOTH},
            },
        ),
    ],
)
def test_each_utility_needs_the_key_of_each_bucket_it_reads_or_writes(
    backend: str, expected: dict
) -> None:
    # Reading an SSE-KMS object decrypts its data key; writing one makes a data key, and a
    # multipart upload or copy (thaw's, archive's) decrypts it again for each part.
    environ = {"GAS_GAS_ARCHIVE_BACKEND": backend}
    needs = {u: kms_actions(u, load_config(u, environ=environ)) for u in UTILITIES}
    assert needs == expected
