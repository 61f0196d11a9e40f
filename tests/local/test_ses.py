"""The local stack's SES sandbox (``[local] ses_sandbox``): mail only to verified recipients."""

from __future__ import annotations

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto.ses.models import ses_backends

from localaws import ses
from localaws.settings import configure
from tests.conftest import Server, Stack

SENDER = "noreply@gas.example.com"  # the config's [notify] sender, which the stack verifies
REFUSED = (
    "Email address is not verified. The following identities failed the check in region US-EAST-1: "
)


@pytest.fixture
def sandbox(stack: Stack) -> Stack:
    """A stack whose SES is in the sandbox, with one verified address and one verified domain."""
    assert stack.config.notify.sender == SENDER
    ses.install()
    configure(ses_sandbox=True)
    stack.client("ses").verify_email_identity(EmailAddress="bob@example.com")
    stack.client("sesv2").create_email_identity(EmailIdentity="verified.example.org")
    return stack


def sent() -> list[list[str]]:
    """The recipients of every e-mail moto sent, oldest first (any kind of e-mail)."""
    return [
        sorted(
            m.destinations
            if isinstance(m.destinations, list)
            else [a for addresses in m.destinations.values() for a in addresses]
        )
        for _, _, backend in ses_backends.iter_backends()
        for m in backend.sent_messages
    ]


def send_v1(ses_client: BaseClient, to: list[str], cc: list[str] | None = None) -> None:
    ses_client.send_email(
        Source=SENDER,
        Destination={"ToAddresses": to, "CcAddresses": cc or []},
        Message={"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}},
    )


def raw(to: str) -> bytes:
    return f"From: {SENDER}\r\nTo: {to}\r\nSubject: s\r\n\r\nbody\r\n".encode()


def refusal(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    error = excinfo.value.response["Error"]
    return error["Code"], error["Message"]


ALLOWED = [
    "bob@example.com",  # a verified address
    "anyone@verified.example.org",  # at a verified domain
    "success@simulator.amazonses.com",  # the mailbox simulator
    "bounce+label-1@simulator.amazonses.com",  # the simulator, labelled
]


def test_in_the_sandbox_sendemail_goes_only_to_verified_recipients(sandbox: Stack) -> None:
    client = sandbox.client("ses")
    # When an e-mail is sent to verified recipients and the mailbox simulator, it goes
    send_v1(client, ALLOWED)
    assert sent() == [sorted(ALLOWED)]
    # When one of its recipients is not verified (To or Cc), it is refused, naming them
    for to, cc, failed in [
        (["carol@example.com"], [], "carol@example.com"),
        (
            ["bob@example.com", "carol@example.com"],
            ["x@other.example.net"],
            "carol@example.com, x@other.example.net",
        ),
    ]:
        with pytest.raises(ClientError) as excinfo:
            send_v1(client, to, cc)
        assert refusal(excinfo) == ("MessageRejected", REFUSED + failed)
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # and nothing more is sent
    assert sent() == [sorted(ALLOWED)]


def test_in_the_sandbox_raw_and_v2_e_mail_goes_only_to_verified_recipients(
    sandbox: Stack,
) -> None:
    v1, v2 = sandbox.client("ses"), sandbox.client("sesv2")
    # SendRawEmail: recipients from the headers, or from Destinations
    v1.send_raw_email(RawMessage={"Data": raw("bob@example.com")})
    with pytest.raises(ClientError) as excinfo:
        v1.send_raw_email(RawMessage={"Data": raw("carol@example.com")})
    assert refusal(excinfo) == ("MessageRejected", REFUSED + "carol@example.com")
    with pytest.raises(ClientError) as excinfo:
        v1.send_raw_email(
            RawMessage={"Data": raw("bob@example.com")}, Destinations=["dave@example.com"]
        )
    assert refusal(excinfo) == ("MessageRejected", REFUSED + "dave@example.com")
    # SESv2 SendEmail, simple and raw
    simple = {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}}
    v2.send_email(FromEmailAddress=SENDER, Destination={"ToAddresses": ALLOWED[1:]}, Content=simple)
    for content in (simple, {"Raw": {"Data": raw("carol@example.com")}}):
        with pytest.raises(ClientError) as excinfo:
            v2.send_email(
                FromEmailAddress=SENDER,
                Destination={"ToAddresses": ["carol@example.com"]},
                Content=content,
            )
        assert refusal(excinfo) == ("MessageRejected", REFUSED + "carol@example.com")
    assert sent() == [["bob@example.com"], sorted(ALLOWED[1:])]


def test_in_the_sandbox_a_templated_e_mail_and_its_sender_are_checked_too(
    sandbox: Stack,
) -> None:
    client = sandbox.client("ses")
    client.create_template(Template={"TemplateName": "t", "SubjectPart": "s", "TextPart": "b"})

    def send(source: str, to: str) -> None:
        client.send_templated_email(
            Source=source, Destination={"ToAddresses": [to]}, Template="t", TemplateData="{}"
        )

    send(SENDER, "bob@example.com")
    with pytest.raises(ClientError) as excinfo:
        send("eve@unverified.example.net", "carol@example.com")
    failed = "eve@unverified.example.net, carol@example.com"
    assert refusal(excinfo) == ("MessageRejected", REFUSED + failed)
    assert sent() == [["bob@example.com"]]


def test_out_of_the_sandbox_any_recipient_is_accepted(stack: Stack) -> None:
    ses.install()
    send_v1(stack.client("ses"), ["carol@example.com"])
    assert sent() == [["carol@example.com"]]


@pytest.fixture
def stack_settings() -> dict[str, str]:
    return {"GAS_LOCAL_SES_SANDBOX": "true"}


def test_the_server_refuses_unverified_recipients_in_the_sandbox(server: Server) -> None:
    client = server.aws.session.client("ses")
    with pytest.raises(ClientError) as excinfo:
        send_v1(client, ["alice@example.com"])
    assert refusal(excinfo) == ("MessageRejected", REFUSED + "alice@example.com")
    client.verify_email_identity(EmailAddress="alice@example.com")
    send_v1(client, ["alice@example.com"])
    assert [e["to"] for e in ses.sent_emails(server.env["AWS_ENDPOINT_URL"])] == [
        ["alice@example.com"]
    ]
