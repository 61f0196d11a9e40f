"""The faults proxy (localaws/faults.py) between real botocore clients and the local stack."""

from __future__ import annotations

import io
import os
import queue
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from localaws import faults
from localaws.stack import CREDENTIALS, REGION
from tests.conftest import wait_for
from tests.local.conftest import stop

MiB = 1024 * 1024
# What botocore raises when a connection is reset or closed without an answer.
CONNECTION_ERRORS = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)


def client(endpoint: str, service: str, attempts: int = 1) -> Any:
    """A botocore client of `endpoint` making `attempts` attempts (standard retry mode)."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(
            retries={"mode": "standard", "total_max_attempts": attempts},
            read_timeout=10,
            connect_timeout=5,
        ),
    )


def outcome(call: Callable[[], Any]) -> str:
    """What a call came to: "ok", the error code botocore reports, or "connection"."""
    try:
        call()
        return "ok"
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    except CONNECTION_ERRORS:
        return "connection"


def received(sqs: Any, url: str) -> list[str]:
    return [
        m["Body"]
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
    ]


# -- forwarding, faults off ---------------------------------------------------------------------


def test_s3_bodies_pass_byte_identical(proxy: str, upstream: str) -> None:
    # Given a bucket, and a client of the proxy that never retries (a retry could hide damage)
    s3 = client(proxy, "s3")
    s3.create_bucket(Bucket="faults-bodies")
    data = os.urandom(6 * MiB + 123)

    # When an object is put whole, and another uploaded in 5 MiB parts, two at a time
    s3.put_object(Bucket="faults-bodies", Key="whole", Body=data)
    s3.upload_fileobj(
        io.BytesIO(data * 2),
        "faults-bodies",
        "parts",
        Config=TransferConfig(
            multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2
        ),
    )

    # Then the server holds both byte for byte, and they come back the same way
    direct = client(upstream, "s3")
    assert direct.get_object(Bucket="faults-bodies", Key="whole")["Body"].read() == data
    assert s3.get_object(Bucket="faults-bodies", Key="parts")["Body"].read() == data * 2
    assert s3.head_object(Bucket="faults-bodies", Key="parts")["ContentLength"] == 2 * len(data)
    assert faults.counts(proxy)["counts"]["s3"] == {
        "CreateBucket": {"forwarded": 1},
        "PutObject": {"forwarded": 1},
        "CreateMultipartUpload": {"forwarded": 1},
        "UploadPart": {"forwarded": 3},
        "CompleteMultipartUpload": {"forwarded": 1},
        "GetObject": {"forwarded": 1},
        "HeadObject": {"forwarded": 1},
    }


def test_other_services_work_through_it(proxy: str) -> None:
    # SQS, SNS → SQS
    sqs, sns = client(proxy, "sqs"), client(proxy, "sns")
    url = sqs.create_queue(QueueName="faults-forward")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topic = sns.create_topic(Name="faults-forward")["TopicArn"]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
    )
    sqs.send_message(QueueUrl=url, MessageBody="sent")
    sns.publish(TopicArn=topic, Message="published")
    bodies: list[str] = []
    wait_for(
        lambda: bodies.extend(received(sqs, url)) or len(bodies) >= 2,
        timeout=10,
        what="both messages",
    )
    assert sorted(bodies) == ["published", "sent"]

    # DynamoDB
    dynamodb = client(proxy, "dynamodb")
    item = {"job_id": {"S": "faults-forward"}, "user_id": {"S": "u-alice"}}
    dynamodb.put_item(TableName="gas-annotations", Item=item)
    assert (
        dynamodb.get_item(TableName="gas-annotations", Key={"job_id": item["job_id"]})["Item"]
        == item
    )

    # Glacier
    glacier = client(proxy, "glacier")
    glacier.create_vault(vaultName="faults-forward")
    archive_id = glacier.upload_archive(vaultName="faults-forward", body=b"archive")["archiveId"]
    job_id = glacier.initiate_job(
        vaultName="faults-forward",
        jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id, "Tier": "Expedited"},
    )["jobId"]
    job = glacier.describe_job(vaultName="faults-forward", jobId=job_id)
    assert job["ArchiveId"] == archive_id

    # SES, STS
    ses = client(proxy, "ses")
    ses.verify_email_identity(EmailAddress="faults@example.com")
    assert "faults@example.com" in ses.list_identities()["Identities"]
    assert client(proxy, "sts").get_caller_identity()["Account"] == "123456789012"

    counts = faults.counts(proxy)["counts"]
    assert counts["sqs"]["SendMessage"] == {"forwarded": 1}
    assert counts["sns"]["Publish"] == {"forwarded": 1}
    assert counts["dynamodb"]["PutItem"] == {"forwarded": 1}
    assert counts["glacier"] == {
        "CreateVault": {"forwarded": 1},
        "UploadArchive": {"forwarded": 1},
        "InitiateJob": {"forwarded": 1},
        "DescribeJob": {"forwarded": 1},
    }
    assert counts["ses"]["VerifyEmailIdentity"] == {"forwarded": 1}
    assert counts["sts"] == {"GetCallerIdentity": {"forwarded": 1}}


class RecordingUpstream:
    """A raw HTTP server that, like moto's, takes one request per connection and closes it
    after its answer; it records the bytes of each request (as many as the test expects)."""

    def __init__(self, answer: bytes):
        self.answer = answer
        self.expected_sizes: queue.Queue[int] = queue.Queue()
        self.requests: queue.Queue[bytes] = queue.Queue()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            connection, _ = self.listener.accept()
            with connection:
                size, data = self.expected_sizes.get(timeout=10), b""
                while len(data) < size and (more := connection.recv(65536)):
                    data += more
                self.requests.put(data)
                connection.sendall(self.answer)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size and (more := sock.recv(size - len(data))):
        data += more
    return data


def test_expect_continue_and_chunked_bodies_relayed_as_framed() -> None:
    # Given an upstream answering chunked with an extension and a trailer, then closing
    answer_head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
    answer_body = b"4;name=value\r\nabcd\r\n0\r\nX-Checksum: 1\r\n\r\n"
    upstream = RecordingUpstream(answer_head + b"Connection: close\r\n\r\n" + answer_body)
    process, endpoint = faults.launch(upstream.url)
    headers = (
        b"Host: bucket.example:9000\r\nx-amz-date: 20250101T000000Z\r\n"
        b"X-Odd-Case:   spaced  value \r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKID/"
        b"20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=abc\r\n"
    )
    try:
        with socket.create_connection(
            ("127.0.0.1", int(endpoint.rsplit(":", 1)[1])), timeout=10
        ) as sock:
            # When a PutObject with Expect: 100-continue sends its head
            head = b"PUT /bucket/key HTTP/1.1\r\n" + headers + b"Content-Length: 5\r\n"
            sock.sendall(head + b"Expect: 100-continue\r\n\r\n")
            # Then the proxy answers 100 Continue itself, before the body is sent
            continue_ = b"HTTP/1.1 100 Continue\r\n\r\n"
            assert read_exactly(sock, len(continue_)) == continue_
            sock.sendall(b"hello")
            forwarded = head + b"\r\nhello"  # every header as sent, but Expect
            upstream.expected_sizes.put(len(forwarded))
            assert upstream.requests.get(timeout=10) == forwarded
            # and relays the answer as framed, less the upstream's Connection: close
            answer = answer_head + b"\r\n" + answer_body
            assert read_exactly(sock, len(answer)) == answer

            # When the same connection (kept alive) sends a chunked body with a trailer
            chunked = (
                b"PUT /bucket/key?partNumber=1&uploadId=u HTTP/1.1\r\n"
                + headers
                + b"Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n"
                + b"6\r\n world\r\n0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\n"
            )
            upstream.expected_sizes.put(len(chunked))
            sock.sendall(chunked)
            # Then the upstream gets it byte for byte, and the client the answer
            assert upstream.requests.get(timeout=10) == chunked
            assert read_exactly(sock, len(answer)) == answer
        assert faults.counts(endpoint)["counts"] == {
            "s3": {"PutObject": {"forwarded": 1}, "UploadPart": {"forwarded": 1}}
        }
    finally:
        stop(process)
        upstream.listener.close()


# -- faults -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def erring_proxy(upstream: str) -> Iterator[str]:
    """A proxy answering every request with an error."""
    process, endpoint = faults.launch(upstream, errors=1.0)
    yield endpoint
    stop(process)


JSON_CODES = {"ThrottlingException", "InternalFailure"}
QUERY_CODES = {"Throttling", "InternalFailure"}
S3_CODES = {"SlowDown", "InternalError"}
ERROR_CASES = [
    (
        "dynamodb",
        "ListTables",
        lambda c: c.list_tables(),
        {"ThrottlingException", "InternalServerError"},
    ),
    ("sqs", "ListQueues", lambda c: c.list_queues(), JSON_CODES),
    ("s3", "ListBuckets", lambda c: c.list_buckets(), S3_CODES),
    (
        "s3",
        "PutObject",
        lambda c: c.put_object(Bucket="faults-errors", Key="k", Body=b"x" * MiB),
        S3_CODES,
    ),
    # A HEAD answer has no body: botocore reports its status as the code.
    ("s3", "HeadObject", lambda c: c.head_object(Bucket="faults-errors", Key="k"), {"503", "500"}),
    (
        "glacier",
        "ListVaults",
        lambda c: c.list_vaults(),
        {"ThrottlingException", "ServiceUnavailableException"},
    ),
    ("sns", "ListTopics", lambda c: c.list_topics(), QUERY_CODES),
    ("ses", "ListIdentities", lambda c: c.list_identities(), QUERY_CODES),
    ("sts", "GetCallerIdentity", lambda c: c.get_caller_identity(), QUERY_CODES),
    ("iam", "ListUsers", lambda c: c.list_users(), QUERY_CODES),
]


@pytest.mark.parametrize(
    ("service", "operation", "call", "codes"),
    ERROR_CASES,
    ids=[f"{case[0]}-{case[1]}" for case in ERROR_CASES],
)
def test_errors_in_each_protocol_are_parsed_and_retried(
    erring_proxy: str,
    no_backoff: None,
    service: str,
    operation: str,
    call: Callable[[Any], Any],
    codes: set[str],
) -> None:
    # When a single-attempt client calls until it has seen both kinds of error
    single, seen, singles = client(erring_proxy, service), set(), 0
    while seen != codes and singles < 30:
        singles += 1
        with pytest.raises(ClientError) as excinfo:
            call(single)
        # Then botocore parses the protocol's throttling or 5xx code, and tried once
        error = excinfo.value.response
        assert error["Error"]["Code"] in codes
        assert error["ResponseMetadata"]["RetryAttempts"] == 0
        seen.add(error["Error"]["Code"])
    assert seen == codes

    # When a client allowed two attempts calls until each kind has come first
    retried = client(erring_proxy, service, attempts=2)
    attempts: list[str] = []  # each attempt's code
    retried.meta.events.register(
        "response-received",
        lambda parsed_response, **_: attempts.append(parsed_response["Error"]["Code"]),
    )
    calls = 0
    while set(attempts[::2]) != codes and calls < 30:
        calls += 1
        with pytest.raises(ClientError) as excinfo:
            call(retried)
        # Then botocore's standard mode retried after whichever came first
        assert excinfo.value.response["ResponseMetadata"]["RetryAttempts"] == 1
        assert len(attempts) == 2 * calls
    assert set(attempts[::2]) == codes
    # and nothing reached the server
    assert faults.counts(erring_proxy)["counts"][service][operation] == {
        "error": singles + len(attempts)
    }


@pytest.mark.parametrize(
    "setting, fault, takes_effect", [("resets", "reset", False), ("lost", "lost", True)]
)
def test_a_reset_never_reaches_the_server_and_a_lost_answer_took_effect(
    proxy: str, upstream: str, setting: str, fault: str, takes_effect: bool
) -> None:
    # Given a queue and a bucket, and every connection reset (or every answer lost)
    name = f"faults-{fault}"
    direct_sqs, direct_s3 = client(upstream, "sqs"), client(upstream, "s3")
    url = direct_sqs.create_queue(QueueName=name)["QueueUrl"]
    direct_s3.create_bucket(Bucket=name)
    faults.configure(proxy, **{setting: 1.0})

    # When single-attempt clients send a message and put an object (Expect: 100-continue)
    # through the proxy, then they see connection errors
    data = os.urandom(MiB)
    with pytest.raises(CONNECTION_ERRORS):
        client(proxy, "sqs").send_message(QueueUrl=url, MessageBody="sent")
    with pytest.raises(CONNECTION_ERRORS):
        client(proxy, "s3").put_object(Bucket=name, Key="k", Body=data)

    # And a reset reached nothing, while a lost answer's request took effect
    assert received(direct_sqs, url) == (["sent"] if takes_effect else [])
    keys = [o["Key"] for o in direct_s3.list_objects_v2(Bucket=name).get("Contents", [])]
    assert keys == (["k"] if takes_effect else [])
    if takes_effect:
        assert direct_s3.get_object(Bucket=name, Key="k")["Body"].read() == data
    counts = faults.counts(proxy)["counts"]
    assert counts["sqs"] == {"SendMessage": {fault: 1}}
    assert counts["s3"] == {"PutObject": {fault: 1}}


def test_lost_answer_fails_a_retried_conditional_write(proxy: str, no_backoff: None) -> None:
    # Given a client allowed two attempts, the first attempt's answer lost and the second's not
    dynamodb = client(proxy, "dynamodb", attempts=2)
    faults.configure(proxy, lost=1.0)
    sent: list[object] = []

    def answer_the_second(request: Any, **_: Any) -> None:
        sent.append(request)
        if len(sent) == 2:
            faults.configure(proxy, lost=0.0)

    dynamodb.meta.events.register("before-send.dynamodb.PutItem", answer_the_second)
    item = {"job_id": {"S": f"faults-{uuid.uuid4()}"}, "user_id": {"S": "u-alice"}}

    # When it writes an item on condition that it does not exist yet
    with pytest.raises(ClientError) as excinfo:
        dynamodb.put_item(
            TableName="gas-annotations",
            Item=item,
            ConditionExpression="attribute_not_exists(job_id)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )

    # Then botocore's retry fails the condition against the write of its own first attempt
    error = excinfo.value.response
    assert error["Error"]["Code"] == "ConditionalCheckFailedException"
    assert error["ResponseMetadata"]["RetryAttempts"] == 1
    assert error["Item"] == item
    assert faults.counts(proxy)["counts"]["dynamodb"] == {"PutItem": {"lost": 1, "forwarded": 1}}


def test_same_seed_same_decisions(upstream: str) -> None:
    # Given three proxies with the same rates, two with the same seed
    runs = []
    for seed in (7, 7, 8):
        process, endpoint = faults.launch(upstream, seed=seed, errors=0.3, resets=0.2, lost=0.2)
        try:
            # When each gets the same 40 requests one after the other
            sqs = client(endpoint, "sqs")
            outcomes = [outcome(sqs.list_queues) for _ in range(40)]
            runs.append((outcomes, faults.counts(endpoint)["counts"]))
        finally:
            stop(process)

    # Then the two with the same seed decide alike, and the other differently
    (first, first_counts), (second, second_counts), (other, _) = runs
    assert first == second and first_counts == second_counts
    assert first != other
    # and every fault was among the decisions
    assert set(first_counts["sqs"]["ListQueues"]) == set(faults.FAULTS)
    assert {"ok", "connection", "ThrottlingException", "InternalFailure"} == set(first)


def test_latency_delays_what_is_forwarded_and_only_that() -> None:
    # Given 300 ms of latency, and every fault in turn
    for fault, settings in [
        ("forwarded", {}),
        ("lost", {"lost": 1.0}),
        ("error", {"errors": 1.0}),
        ("reset", {"resets": 1.0}),
    ]:
        decision = faults.Faults(faults.Settings(latency_ms=300, **settings), seed=1).choose()
        # Then a request that reaches the server waits 0.3 s first; one refused at once does not
        assert decision.fault == fault
        assert decision.latency == (0.3 if fault in ("forwarded", "lost") else 0.0)


def test_counts_settings_at_run_time_and_summary(upstream: str) -> None:
    # Given a proxy erring on every SQS request
    process, endpoint = faults.launch(upstream, errors=1.0, services=["sqs"])
    try:
        assert faults.counts(endpoint)["settings"] == {
            "errors": 1.0,
            "resets": 0.0,
            "lost": 0.0,
            "latency_ms": 0.0,
            "rate_mb_s": 0.0,
            "services": ["sqs"],
        }

        # Then SQS errs and S3, not among the services, does not
        assert outcome(client(endpoint, "sqs").list_queues) in JSON_CODES
        assert outcome(client(endpoint, "s3").list_buckets) == "ok"

        # When every request of every service is reset, moto's own pages are not
        assert faults.configure(endpoint, errors=0.0, resets=1.0, services=None)["resets"] == 1.0
        with urllib.request.urlopen(endpoint + "/moto-api/gas/sent-emails", timeout=10) as page:
            assert page.status == 200

        # When settings are changed, any subset, then the new ones are answered
        assert faults.configure(endpoint, resets=0.0, latency_ms=300) == {
            "errors": 0.0,
            "resets": 0.0,
            "lost": 0.0,
            "latency_ms": 300,
            "rate_mb_s": 0.0,
            "services": None,
        }
        # and bad ones refused, leaving them as they were
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            faults.configure(endpoint, errors=2)
        assert excinfo.value.code == 400
        assert faults.counts(endpoint)["settings"]["errors"] == 0.0

        # Then requests are still forwarded (that each waits the latency first: below)
        assert outcome(client(endpoint, "sts").get_caller_identity) == "ok"

        report = faults.counts(endpoint)
        assert report["counts"] == {
            "sqs": {"ListQueues": {"error": 1}},
            "s3": {"ListBuckets": {"forwarded": 1}},
            "moto-api": {"GET /moto-api/gas/sent-emails": {"forwarded": 1}},
            "sts": {"GetCallerIdentity": {"forwarded": 1}},
        }
        assert report["totals"] == {"forwarded": 3, "error": 1, "reset": 0, "lost": 0}
    finally:
        # When it is stopped, then it exits 0 with its totals
        summary = stop(process)
    assert summary.strip() == "faults: 4 requests: 3 forwarded, 1 error, 0 reset, 0 lost"


def test_a_rate_cap_paces_each_write_to_the_rate() -> None:
    # Given a pacer at 1 MB/s on a clock that only moves when it sleeps
    now, written, slept = [0.0], [], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    write = faults.Pacer(clock=lambda: now[0], sleep=sleep).paced(written.append, 1e6)
    # When 3 MB go through it in 64 KB writes
    for _ in range(46):
        write(b"x" * 65_536)
    # Then every byte went on, and the writer was held back by as long as 3 MB take at 1 MB/s
    assert sum(map(len, written)) == 46 * 65_536
    assert sum(slept) == pytest.approx(46 * 65_536 / 1e6)
    # And without a rate nothing is paced
    assert faults.Pacer(sleep=sleep).paced(written.append, 0.0) == written.append


def test_a_rate_capped_proxy_relays_bodies_intact(upstream: str) -> None:
    process, endpoint = faults.launch(upstream, rate_mb_s=50.0)
    try:
        s3 = client(endpoint, "s3")
        s3.create_bucket(Bucket="paced")
        data = os.urandom(3 * MiB)
        s3.put_object(Bucket="paced", Key="k", Body=data)
        assert s3.get_object(Bucket="paced", Key="k")["Body"].read() == data
        assert faults.counts(endpoint)["settings"]["rate_mb_s"] == 50.0
    finally:
        stop(process)
