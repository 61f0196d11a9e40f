"""Every branch of the notify handler, against moto in process (SES keeps what it sent)."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError
from botocore.retries.standard import ExponentialBackoff
from moto.core.models import botocore_stubber

from localaws.ses import sent_emails_in_process
from tests.conftest import LostAnswers, Stack, job, put_job, sets
from util.helpers import Annotations, InvalidMessage
from util.messages import Message, decode_body
from util.notify.notify import HERE, Notifier
from util.schema import FAILED, NOTIFIED_TIME, NOTIFY_CLAIM_EXPIRES
from util.util_config import ConfigError

# Fixed times, so the rendered dates can be checked: 14 Nov 2023, 22:13:20 UTC.
COMPLETE = 1_700_000_000
NOTIFY_AT = COMPLETE + 5
HOSTILE = "<script>alert(1)</script>.vcf"


def message(envelope: bool = True, **body: Any) -> Message:
    """A job-results message as the notify queue receives it: in its SNS envelope by default."""
    text = json.dumps(body)
    if envelope:
        text = json.dumps(
            {
                "Type": "Notification",
                "MessageId": "sns-1",
                "Message": text,
                "TopicArn": "arn:aws:sns:us-east-1:123456789012:gas-job-results",
            }
        )
    data = decode_body(text)
    return Message(
        message_id="m1",
        receipt_handle="r",
        body=text,
        receive_count=1,
        attributes={},
        received_at=0,
        visible_until=0,
        data=data,
        job_id=data.get("job_id"),
    )


def results_message(
    job_id: str = "j1", user_id: str = "u-alice", status: str = "COMPLETED"
) -> Message:
    return message(job_id=job_id, user_id=user_id, job_status=status)


def notifier(stack: Stack, **settings: str) -> Notifier:
    for name, value in settings.items():
        setattr(stack.config.notify, name, value)
    return Notifier(stack.config, stack.aws, clock=lambda: NOTIFY_AT)


def set_user(stack: Stack, user_id: str, **attributes: str) -> None:
    item = {
        "user_id": user_id,
        "name": "Someone",
        "email": f"{user_id}@example.com",
        "role": "free_user",
        **attributes,
    }
    stack.client("dynamodb").put_item(
        TableName=stack.config.gas.users_table, Item={k: {"S": v} for k, v in item.items()}
    )


@pytest.fixture
def requests(stack: Stack) -> list[dict[str, Any]]:
    """Every SendEmail the handler makes, as sent: moto keeps only one body of each e-mail."""
    made: list[dict[str, Any]] = []
    stack.client("ses").meta.events.register(
        "provide-client-params.ses.SendEmail", lambda params, **_: made.append(params)
    )
    return made


def parts(request: dict[str, Any]) -> tuple[list[str], str, str, str]:
    """(to, subject, text, html) of one SendEmail request."""
    content = request["Message"]
    return (
        request["Destination"]["ToAddresses"],
        content["Subject"]["Data"],
        content["Body"]["Text"]["Data"],
        content["Body"]["Html"]["Data"],
    )


# -- injected SES errors, in SES's own wire format ---------------------------------------------


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_: Any):
        yield self.data


def inject_ses_error(
    stack: Stack, code: str, text: str, status: int = 400, times: int | None = None
) -> list[str]:
    """Make SendEmail fail with `code` (`times` times, or always); returns one entry per failure."""
    failures: list[str] = []
    xml = (
        f'<ErrorResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/"><Error>'
        f"<Type>Sender</Type><Code>{code}</Code><Message>{text}</Message></Error>"
        f"<RequestId>r-1</RequestId></ErrorResponse>"
    ).encode()

    def before_send(event_name: str, request: Any, **_: Any) -> AWSResponse | None:
        if not event_name.endswith(".SendEmail") or (times is not None and len(failures) >= times):
            return botocore_stubber(event_name=event_name, request=request)
        failures.append(code)
        if code == "connection":
            raise EndpointConnectionError(endpoint_url=request.url)
        return AWSResponse(request.url, status, {"Content-Type": "text/xml"}, _Body(xml))

    # mock_aws answers from a before-send handler of its own, and every such handler runs:
    # on this client it is called only for requests not failed on purpose, so a failed send
    # leaves no e-mail behind in moto.
    events = stack.client("ses").meta.events
    events.unregister("before-send", botocore_stubber)
    events.register("before-send", before_send)
    return failures


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's throttling backoff reaches seconds; the tests want its attempts, not its waits."""
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)


# -- the e-mails -----------------------------------------------------------------------------


@pytest.mark.parametrize("envelope", [True, False], ids=["sns-envelope", "raw"])
def test_completed_job_is_emailed_to_its_user_and_recorded(
    stack: Stack, requests: list, envelope: bool
) -> None:
    # Given a completed job of Alice's
    put_job(stack, complete_time=COMPLETE)
    # When its job-results message is handled
    outcome = notifier(stack)(
        message(envelope, job_id="j1", user_id="u-alice", job_status="COMPLETED")
    )
    # Then SES sent Alice one e-mail from the configured sender, and the job records it
    assert (outcome.action, outcome.reason) == ("done", "e-mailed (COMPLETED)")
    [sent] = sent_emails_in_process()
    assert sent["source"] == stack.config.notify.sender
    assert sent["to"] == ["alice@example.com"]
    assert sent["subject"] == "GAS: your annotation of sample.vcf is ready"
    assert job(stack)[NOTIFIED_TIME] == NOTIFY_AT
    # And both parts say which file, when, and link to the job page
    [(to, subject, text, html)] = [parts(r) for r in requests]
    assert sent["body"] == html
    for part in (text, html):
        assert "Alice Free" in part and "sample.vcf" in part and "has completed" in part
    assert "Submitted: 14 Nov 2023, 22:12:20 UTC" in text
    assert "Completed: 14 Nov 2023, 22:13:20 UTC" in text
    assert "<td>Submitted:</td><td>14 Nov 2023, 22:12:20 UTC</td>" in html
    assert "<td>Completed:</td><td>14 Nov 2023, 22:13:20 UTC</td>" in html
    assert "\nhttp://localhost:5000/annotations/j1\n" in text
    assert '<a href="http://localhost:5000/annotations/j1">' in html


def test_failed_job_gets_its_own_wording(stack: Stack, requests: list) -> None:
    put_job(stack, complete_time=COMPLETE, job_status=FAILED)
    outcome = notifier(stack)(results_message(status=FAILED))
    assert (outcome.action, outcome.reason) == ("done", "e-mailed (FAILED)")
    [(to, subject, text, html)] = [parts(r) for r in requests]
    assert subject == "GAS: your annotation of sample.vcf failed"
    for part in (text, html):
        assert "could not be completed" in part and "has completed" not in part
        assert "http://localhost:5000/annotations/j1" in part


def test_hostile_file_and_user_names_are_escaped_in_html(stack: Stack, requests: list) -> None:
    # Given a file name and a user name that are HTML
    put_job(stack, input_file_name=HOSTILE)
    set_user(stack, "u-alice", name='Eve <img src=x onerror="steal()">', email="alice@example.com")
    # When the job is e-mailed
    notifier(stack)(results_message())
    # Then the HTML part shows them as text, never as markup
    [(to, subject, text, html)] = [parts(r) for r in requests]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.vcf" in html
    assert "<script" not in html and "<img" not in html
    assert "Eve &lt;img src=x onerror=&quot;steal()&quot;&gt;" in html
    # And the plain-text part and subject carry the name as it is
    assert HOSTILE in text and subject == f"GAS: your annotation of {HOSTILE} is ready"


def test_subject_stays_one_line_whatever_the_file_name(stack: Stack, requests: list) -> None:
    put_job(stack, input_file_name="a\r\nBcc: eve@example.com\n.vcf")
    notifier(stack)(results_message())
    [(to, subject, text, html)] = [parts(r) for r in requests]
    assert subject == "GAS: your annotation of a Bcc: eve@example.com .vcf is ready"
    assert to == ["alice@example.com"]


@pytest.mark.parametrize(
    "web_url, link",
    [
        ("https://gas.example.com/", "https://gas.example.com/annotations/j%2F1"),
        ("https://example.com/gas", "https://example.com/gas/annotations/j%2F1"),
    ],
)
def test_link_is_the_job_page_of_the_web_app(
    stack: Stack, requests: list, web_url: str, link: str
) -> None:
    put_job(stack, job_id="j/1")
    stack.config.gas.web_url = web_url
    notifier(stack)(results_message(job_id="j/1"))
    [(to, subject, text, html)] = [parts(r) for r in requests]
    assert link in text and f'href="{link}"' in html


def test_missing_times_and_file_name_still_give_an_email(stack: Stack, requests: list) -> None:
    put_job(stack, job_status=FAILED)
    stack.client("dynamodb").update_item(
        TableName=stack.config.gas.annotations_table,
        Key={"job_id": {"S": "j1"}},
        UpdateExpression="REMOVE complete_time, input_file_name",
    )
    assert notifier(stack)(results_message(status=FAILED)).action == "done"
    [(to, subject, text, html)] = [parts(r) for r in requests]
    assert subject == "GAS: your annotation of j1 failed" and "Failed:    unknown" in text


# -- no duplicates -----------------------------------------------------------------------------


def test_redelivery_after_success_sends_no_second_email(stack: Stack) -> None:
    put_job(stack)
    notifier(stack)(results_message())
    # When the same message comes again, to this worker or to another
    again = notifier(stack)(results_message())
    # Then nothing more is sent
    assert (again.action, again.reason) == ("done", "already notified")
    assert len(sent_emails_in_process()) == 1


def test_redelivery_after_success_is_done_even_if_the_user_changed_since(stack: Stack) -> None:
    # Given a job e-mailed, whose user then changed to an address no e-mail can go to
    put_job(stack)
    notifier(stack)(results_message())
    set_user(stack, "u-alice", email="not an address")
    # When the message comes again, it is done: not a dead letter for an operator
    again = notifier(stack)(results_message())
    assert (again.action, again.reason) == ("done", "already notified")
    assert len(sent_emails_in_process()) == 1


def test_a_copy_recorded_while_this_one_rendered_its_email_sends_no_second(stack: Stack) -> None:
    # Given another copy of the message that e-mailed and recorded it just after this one
    # read the job
    put_job(stack)
    ours = notifier(stack)
    claim = ours.claim

    def another_copy_first(job_id: str):
        other = notifier(stack)(results_message())
        assert other.reason == "e-mailed (COMPLETED)"
        return claim(job_id)

    ours.claim = another_copy_first
    # When this one tries to claim the sending
    outcome = ours(results_message())
    # Then it finds the e-mail recorded: one e-mail in all
    assert (outcome.action, outcome.reason) == ("done", "already notified")
    assert len(sent_emails_in_process()) == 1


def test_a_crash_between_send_and_record_gives_a_second_email(stack: Stack) -> None:
    """The documented window: at least once, never none."""
    # Given a worker that crashed after sending, before recording
    put_job(stack)
    handler = notifier(stack)
    handler.record = lambda job_id: (_ for _ in ()).throw(ConnectionError("crash"))
    with pytest.raises(ConnectionError):
        handler(results_message())
    # When the message comes back while the crashed worker's claim still holds
    waiting = notifier(stack)(results_message())
    # Then it waits for the claim to lapse, and then sends
    claim_seconds = stack.config.notify.claim_seconds
    assert (waiting.action, waiting.delay) == ("defer", claim_seconds + 1)
    later = Notifier(stack.config, stack.aws, clock=lambda: NOTIFY_AT + claim_seconds + 1)
    assert later(results_message()).action == "done"
    assert len(sent_emails_in_process()) == 2
    assert job(stack)[NOTIFIED_TIME] == NOTIFY_AT + claim_seconds + 1


def test_a_lost_answer_to_the_claim_still_sends_at_once(
    stack: Stack, lost_answers: LostAnswers
) -> None:
    # The claim is written, its answer lost; botocore's retry finds our own claim there
    put_job(stack)
    lost_answers.add("UpdateItem", when=sets(NOTIFY_CLAIM_EXPIRES))
    outcome = notifier(stack)(results_message())
    assert lost_answers.hits == [("UpdateItem", "retry")]
    assert (outcome.action, outcome.reason) == ("done", "e-mailed (COMPLETED)")
    assert len(sent_emails_in_process()) == 1


def test_a_lost_answer_to_the_record_is_our_own_e_mail(
    stack: Stack, lost_answers: LostAnswers
) -> None:
    put_job(stack)
    lost_answers.add("UpdateItem", when=sets(NOTIFIED_TIME))
    outcome = notifier(stack)(results_message())
    assert (outcome.action, outcome.reason) == ("done", "e-mailed (COMPLETED)")
    assert NOTIFIED_TIME in job(stack) and len(sent_emails_in_process()) == 1


def test_two_copies_handled_at_the_same_moment_send_one_email(stack: Stack) -> None:
    # Given the annotator published one result twice, and two workers got a copy each
    put_job(stack)
    handlers = [notifier(stack), notifier(stack)]
    together = threading.Barrier(2)
    outcomes = []

    def handle(handler: Notifier) -> None:
        together.wait()
        outcomes.append(handler(results_message()))

    threads = [threading.Thread(target=handle, args=(h,)) for h in handlers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then one e-mail is sent; the other copy is done, or waits for the first to record
    assert len(sent_emails_in_process()) == 1
    assert sorted(o.action for o in outcomes) in (["defer", "done"], ["done", "done"])


def test_a_send_that_failed_lets_go_of_its_claim(stack: Stack, no_backoff: None) -> None:
    put_job(stack)
    inject_ses_error(
        stack,
        "Throttling",
        "Maximum sending rate exceeded.",
        times=stack.config.worker.aws_max_attempts,
    )
    assert notifier(stack)(results_message()).action == "retry"
    # The redelivery need not wait for a claim to lapse
    assert notifier(stack)(results_message()).action == "done"
    assert len(sent_emails_in_process()) == 1


def test_a_copy_that_recorded_first_is_noted(stack: Stack) -> None:
    put_job(stack)
    handler = notifier(stack)
    send = handler.send

    def send_while_another_copy_records(address, email):
        send(address, email)
        Annotations(stack.aws, stack.config.gas.annotations_table).update_if(
            "j1",
            "SET #n = :n, #c = :c",
            "attribute_not_exists(#n)",
            {"#n": NOTIFIED_TIME, "#c": "notify_claim"},
            {":n": 1, ":c": "another-copy"},
        )

    handler.send = send_while_another_copy_records
    outcome = handler(results_message())
    assert outcome.action == "done" and "another copy" in outcome.reason
    assert job(stack)[NOTIFIED_TIME] == 1


# -- messages that can never be e-mailed -------------------------------------------------------


@pytest.mark.parametrize(
    "body, item, user, reason",
    [
        ({"job_id": "nope", "user_id": "u-alice"}, {}, None, "unknown job nope"),
        ({"job_id": "j1", "user_id": "u-carol"}, {}, None, "user u-carol does not own job j1"),
        (
            {"job_id": "j1", "user_id": "u-alice"},
            {"job_status": "RUNNING"},
            None,
            "job j1 is RUNNING, not COMPLETED or FAILED",
        ),
        (
            {"job_id": "j1", "user_id": "u-alice", "job_status": "COMPLETED"},
            {"job_status": "PENDING"},
            None,
            "job j1 is PENDING, not COMPLETED or FAILED",
        ),
        ({"job_id": "j1"}, {}, None, "field 'user_id' missing"),
        ({"user_id": "u-alice"}, {}, None, "field 'job_id' missing"),
        (
            {"job_id": "j1", "user_id": "u-ghost"},
            {"user_id": "u-ghost"},
            None,
            "unknown user u-ghost",
        ),
        (
            {"job_id": "j1", "user_id": "u-alice"},
            {},
            "",
            "user u-alice has no usable e-mail address",
        ),
        (
            {"job_id": "j1", "user_id": "u-alice"},
            {},
            "alice",
            "user u-alice has no usable e-mail address",
        ),
        (
            {"job_id": "j1", "user_id": "u-alice"},
            {},
            "alice@example.com\r\nBcc: eve@example.com",
            "user u-alice has no usable e-mail address",
        ),
        (
            {"job_id": "j1", "user_id": "u-alice"},
            {},
            "alice@example.com, eve@example.com",
            "user u-alice has no usable e-mail address",
        ),
        (
            {"job_id": "j1", "user_id": "u-alice"},
            {},
            "Alice <alice@example.com>",
            "user u-alice has no usable e-mail address",
        ),
    ],
    ids=[
        "unknown-job",
        "wrong-user",
        "running",
        "pending",
        "no-user-id",
        "no-job-id",
        "unknown-user",
        "no-address",
        "not-an-address",
        "header-injection",
        "two-addresses",
        "display-name",
    ],
)
def test_messages_that_cannot_be_emailed_are_invalid(
    stack: Stack, body: dict, item: dict, user: str | None, reason: str
) -> None:
    put_job(stack, **item)
    if user is not None:
        set_user(stack, "u-alice", email=user)
    with pytest.raises(InvalidMessage, match=reason.replace("(", r"\(")):
        notifier(stack)(message(**body))
    assert sent_emails_in_process() == []
    assert NOTIFIED_TIME not in job(stack)


def test_an_unverified_sender_is_rejected_by_ses_and_invalid(stack: Stack) -> None:
    put_job(stack)
    with pytest.raises(
        InvalidMessage, match="SES MessageRejected: Email address not verified other@example.com"
    ):
        notifier(stack, sender="other@example.com")(results_message())
    assert NOTIFIED_TIME not in job(stack)


@pytest.mark.parametrize(
    "code, text",
    [
        (
            "MessageRejected",
            "Email address is not verified. The following identities failed the "
            "check in region US-EAST-1: alice@example.com",
        ),
        ("InvalidParameterValue", "Missing final '@domain'"),
    ],
)
def test_an_address_ses_refuses_for_good_is_invalid(stack: Stack, code: str, text: str) -> None:
    put_job(stack)
    failures = inject_ses_error(stack, code, text)
    with pytest.raises(InvalidMessage, match=f"SES {code}: {text[:20]}"):
        notifier(stack)(results_message())
    assert failures == [code]  # permanent: botocore does not retry it
    assert sent_emails_in_process() == [] and NOTIFIED_TIME not in job(stack)


# -- transient SES errors ----------------------------------------------------------------------


def test_throttling_is_retried_by_botocore_then_sent(stack: Stack, no_backoff: None) -> None:
    put_job(stack)
    failures = inject_ses_error(stack, "Throttling", "Maximum sending rate exceeded.", times=2)
    outcome = notifier(stack)(results_message())
    assert outcome.action == "done" and failures == ["Throttling", "Throttling"]
    assert len(sent_emails_in_process()) == 1 and NOTIFIED_TIME in job(stack)


@pytest.mark.parametrize(
    "code, text, status",
    [
        ("Throttling", "Maximum sending rate exceeded.", 400),
        ("ServiceUnavailable", "Service is unavailable", 503),
        ("connection", "", 0),
    ],
)
def test_lasting_transient_errors_retry_the_message(
    stack: Stack, no_backoff: None, code: str, text: str, status: int
) -> None:
    put_job(stack)
    failures = inject_ses_error(stack, code, text, status)
    outcome = notifier(stack)(results_message())
    assert outcome.action == "retry"
    assert (text or "Could not connect") in outcome.reason
    assert len(failures) == stack.config.worker.aws_max_attempts  # botocore tried them all
    assert sent_emails_in_process() == [] and NOTIFIED_TIME not in job(stack)


# -- templates -----------------------------------------------------------------------------------


def copy_templates(tmp_path: Path) -> Path:
    directory = tmp_path / "templates"
    shutil.copytree(HERE / "templates", directory)
    return directory


def test_operator_templates_are_used(stack: Stack, requests: list, tmp_path: Path) -> None:
    directory = copy_templates(tmp_path)
    (directory / "completed_subject.txt").write_text("[$job_id] $input_file: done\n")
    (directory / "completed.html").write_text("<p>$$5 off for $name</p>")
    put_job(stack)
    notifier(stack, templates=str(directory))(results_message())
    [(to, subject, text, html)] = [parts(r) for r in requests]
    assert subject == "[j1] sample.vcf: done"
    assert html == "<p>$5 off for Alice Free</p>"


def test_a_relative_template_directory_is_the_utilitys_whatever_the_working_directory(
    stack: Stack, requests: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker started elsewhere (systemd's working directory is /), with the default
    monkeypatch.chdir(tmp_path)
    put_job(stack)
    # When it e-mails, the bundled templates of util/notify are the ones used
    notifier(stack)(results_message())
    [(to, subject, text, html)] = [parts(r) for r in requests]
    assert subject == "GAS: your annotation of sample.vcf is ready"


@pytest.mark.parametrize(
    "file, text, error",
    [
        ("failed.txt", "Hello $nmae", r"failed.txt uses unknown placeholder\(s\) \$nmae"),
        ("completed.html", "<p>costs $5</p>", "completed.html has a '\\$' that is no placeholder"),
        ("failed_subject.txt", None, "cannot read .*failed_subject.txt: No such file"),
    ],
)
def test_a_broken_template_is_a_config_error_naming_the_file(
    stack: Stack, tmp_path: Path, file: str, text: str | None, error: str
) -> None:
    directory = copy_templates(tmp_path)
    if text is None:
        (directory / file).unlink()
    else:
        (directory / file).write_text(text)
    with pytest.raises(ConfigError, match=error):
        notifier(stack, templates=str(directory))
