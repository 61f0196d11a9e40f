"""Fixtures of the contract suite: the account its tests run against (tests/contract/account.py).

One stack of each kind per test process: the tests of a process share it, each using keys,
items and queues of its own (`account.unique`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.account import (
    AWS_RUN,
    FAST,
    LIKE_AWS,
    Account,
    LocalAccount,
    aws_account,
    enforced,
    local_stack,
)


@pytest.fixture(scope="session")
def account() -> Iterator[Account]:
    """AWS as the tests see it: the local stack, or with ``GAS_TEST_AWS=1`` a real account."""
    if AWS_RUN:
        if os.environ.get("PYTEST_XDIST_WORKER"):
            raise pytest.UsageError("GAS_TEST_AWS=1 runs in one process (-n 0): one stack")
        with aws_account() as real:
            yield real
        return
    with local_stack(LIKE_AWS) as local:
        yield local


@pytest.fixture(scope="session")
def fast() -> Iterator[LocalAccount]:
    """The local stack with AWS's slow or rare answers made quick or certain (`FAST`):
    for the rows a real account cannot show within a run (marked `local_only`)."""
    assert not AWS_RUN, "a local-only row ran against AWS: mark it local_only"
    with local_stack(FAST) as local:
        yield local


@pytest.fixture(scope="session")
def iam(request: pytest.FixtureRequest) -> Iterator[Account]:
    """An account that checks IAM: AWS, or a local stack of its own with moto's checks on."""
    if AWS_RUN:
        yield request.getfixturevalue("account")
        return
    with local_stack(LIKE_AWS) as local:
        yield enforced(local)


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> tuple[Account, str]:
    """An account in SES's sandbox and a verified sender: locally the `fast` stack (its
    [local] ses_sandbox) and its sender; on AWS the account, if still in the sandbox, and the
    verified address GAS_TEST_AWS_SENDER."""
    if not AWS_RUN:
        fast: Account = request.getfixturevalue("fast")
        return fast, fast.config.notify.sender
    account: Account = request.getfixturevalue("account")
    sender = os.environ.get("GAS_TEST_AWS_SENDER")
    if not sender:
        pytest.skip("give GAS_TEST_AWS_SENDER, an address verified in SES, to check the sandbox")
    if account.client("sesv2").get_account()["ProductionAccessEnabled"]:
        pytest.skip("this account's SES is out of the sandbox")
    return account, sender


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The contract tests of one kind of stack run in one test process (pytest.ini:
    ``--dist loadgroup``), so that a run starts one stack of each kind."""
    for item in items:
        if Path(item.fspath).parent.name == "contract":
            uses = set(getattr(item, "fixturenames", ()))
            kind = "iam" if "iam" in uses else "fast" if uses & {"fast", "sandbox"} else "aws"
            item.add_marker(pytest.mark.xdist_group(f"contract-{kind}"))


@pytest.fixture
def vault(account: Account) -> str:
    """The account's vault; the test skips (AWS only) when the account has no vault API."""
    if account.vault is None:
        pytest.skip(account.no_vault)
    return account.vault
