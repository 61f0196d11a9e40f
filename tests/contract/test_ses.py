"""SES: a sender must be verified; in the sandbox, so must every recipient."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.contract.account import Account, error_code, unique

SIMULATOR = "success@simulator.amazonses.com"  # SES's mailbox simulator: always allowed


def send(account: Account, sender: str, to: str) -> str:
    return str(
        account.client("ses", attempts=1).send_email(
            Source=sender,
            Destination={"ToAddresses": [to]},
            Message={"Subject": {"Data": "contract"}, "Body": {"Text": {"Data": "contract"}}},
        )["MessageId"]
    )


def test_an_unverified_sender_is_refused(account: Account) -> None:
    # When an e-mail is sent from an address nobody verified
    with pytest.raises(ClientError) as refused:
        send(account, f"{unique()}@example.com", SIMULATOR)
    # Then SES refuses it: MessageRejected (notify dead-letters such messages, naming it)
    assert error_code(refused.value) == "MessageRejected"


def test_in_the_sandbox_mail_goes_only_to_verified_recipients(
    sandbox: tuple[Account, str],
) -> None:
    account, sender = sandbox
    # When a verified sender mails the mailbox simulator, and an address nobody verified
    sent = send(account, sender, SIMULATOR)
    with pytest.raises(ClientError) as refused:
        send(account, sender, f"{unique()}@example.com")
    # Then the first goes, the second is refused: MessageRejected
    assert sent
    assert error_code(refused.value) == "MessageRejected"
