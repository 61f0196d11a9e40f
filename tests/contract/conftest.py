"""Fixtures of the contract suite: the account its tests run against (tests/contract/account.py).

One stack of each kind per test process: the tests of a process share it, each using keys,
items and queues of its own (`account.unique`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

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
def iam(account: Account) -> Iterator[Account]:
    """An account that checks IAM: AWS, or a local stack of its own with moto's checks on."""
    if not isinstance(account, LocalAccount):
        yield account
        return
    with local_stack(LIKE_AWS) as local:
        yield enforced(local)


@pytest.fixture
def vault(account: Account) -> str:
    """The account's vault; the test skips (AWS only) when the account has no vault API."""
    if account.vault is None:
        pytest.skip(account.no_vault)
    return account.vault
