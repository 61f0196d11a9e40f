"""A fault-injecting HTTP proxy between AWS clients and the local stack.

    python -m util.local faults --upstream URL [--port 0] [--seed N] [--errors P] [--resets P]
                                [--lost P] [--latency-ms MS] [--rate-mb-s R]
                                [--services s3,glacier,...]

The workers' hardest cases are not AWS's answers but what happens on the way: throttling,
a connection reset before the request arrived, and above all "the request took effect but its
answer never arrived", after which botocore retries a call that already happened. moto answers
every request promptly; this proxy, put between the workers and the moto server of
``python -m util.local serve`` (point ``AWS_ENDPOINT_URL`` at it), makes those cases happen on
demand so that tests and ``make chaos`` can reproduce them. Per request, with independent
probabilities and at most one fault, in this order:

- reset: the client connection is closed (TCP reset) before anything is forwarded;
- error: nothing is forwarded; the service's own wire protocol answers a throttling error or a
  5xx (half each), which botocore's standard retry mode retries;
- lost: the request is forwarded, its whole answer read, then the client connection is closed
  without a byte of it;
- latency: a delay before forwarding every request (of the services faulted);
- rate: each connection's bodies, each way, paced to at most this many MB (10^6 bytes) per
  second (of the services faulted), as one TCP connection to a distant region would be.

The decisions come from one seeded random generator, so a run is reproducible. Forwarding is
otherwise faithful: HTTP/1.1 keep-alive, every header as sent (SigV4 signs them) except the
``Expect: 100-continue`` the proxy answers itself, bodies relayed in chunks as framed
(``Content-Length`` or chunked, trailers included). ``GET /__faults__`` gives the counts by
service, operation and fault with the settings in force; ``POST /__faults__`` with a JSON
object changes the settings. Requests to moto's own ``/moto-api/`` are never faulted.
Standard library only.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import random
import re
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from localaws import announce_and_wait

CONTROL_PATH = "/__faults__"
FAULTS = ("forwarded", "error", "reset", "lost")
FORWARDED, ERROR, RESET, LOST = FAULTS
CHUNK = 64 * 1024  # bodies are copied this much at a time at most
FORM_PREFIX = 64 * 1024  # what is read ahead of a query-protocol body to find its Action
MAX_LINE = 64 * 1024
MAX_HEADERS = 200
CRLF = b"\r\n"
# Headers that concern one connection only (RFC 9110 section 7.6.1), with those that
# Connection names: never relayed; the proxy manages each of its two connections itself.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection"})

Write = Callable[[bytes], Any]


class Pacer:
    """Paces the bytes written through it to `rate` bytes per second (0: no pacing)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ):
        self.clock, self.sleep = clock, sleep
        self.free_at = 0.0  # when the bytes written so far have gone out at the rate

    def paced(self, write: Write, rate: float) -> Write:
        if not rate:
            return write

        def paced_write(data: bytes) -> None:
            now = self.clock()
            self.free_at = max(self.free_at, now) + len(data) / rate
            write(data)
            if self.free_at > now:
                self.sleep(self.free_at - now)

        return paced_write


# -- settings and decisions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What the proxy does to the requests of the services it faults (all: `services` None)."""

    errors: float = 0.0
    resets: float = 0.0
    lost: float = 0.0
    latency_ms: float = 0.0
    rate_mb_s: float = 0.0  # 0: no cap
    services: frozenset[str] | None = None

    def __post_init__(self) -> None:
        for name, most in (
            ("errors", 1),
            ("resets", 1),
            ("lost", 1),
            ("latency_ms", 3.6e6),
            ("rate_mb_s", 1e6),
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value <= most
            ):
                raise ValueError(f"{name} must be a number from 0 to {most:g}, not {value!r}")

    def changed(self, changes: dict[str, Any]) -> Settings:
        """These settings with `changes` (JSON names; `services` a list or null) applied."""
        unknown = set(changes) - {field.name for field in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        if changes.get("services") is not None:
            services = changes["services"]
            if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
                raise ValueError("services must be a list of service names or null")
            changes = {**changes, "services": frozenset(services)}
        return dataclasses.replace(self, **changes)

    def as_json(self) -> dict[str, Any]:
        services = None if self.services is None else sorted(self.services)
        return {**dataclasses.asdict(self), "services": services}


@dataclass(frozen=True)
class Decision:
    """What happens to one request: its fault, whether an error is a throttling one, the delay."""

    fault: str
    throttle: bool = False
    latency: float = 0.0


class Faults:
    """The settings in force, the seeded generator that decides, and the counts."""

    def __init__(self, settings: Settings, seed: int):
        self.settings = settings
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def configure(self, changes: dict[str, Any]) -> Settings:
        with self._lock:
            self.settings = self.settings.changed(changes)
            return self.settings

    def applies_to(self, service: str) -> bool:
        services = self.settings.services
        return service != "moto-api" and (services is None or service in services)

    def choose(self) -> Decision:
        """One decision. Every call draws the same four numbers, whatever the settings, so that
        equal seeds give equal decisions for equal sequences of requests."""
        with self._lock:
            reset, error, lost, throttle = (self._random.random() for _ in range(4))
            settings = self.settings
        latency = settings.latency_ms / 1000
        if reset < settings.resets:
            return Decision(RESET)
        if error < settings.errors:
            return Decision(ERROR, throttle=throttle < 0.5)
        return Decision(LOST if lost < settings.lost else FORWARDED, latency=latency)

    def count(self, service: str, operation: str, fault: str) -> None:
        with self._lock:
            self._counts[service, operation, fault] += 1

    def report(self) -> dict[str, Any]:
        """The counts by service, operation and fault, their totals, and the settings."""
        with self._lock:
            counts = dict(self._counts)
            settings = self.settings
        nested: dict[str, dict[str, dict[str, int]]] = {}
        totals = dict.fromkeys(FAULTS, 0)
        for (service, operation, fault), n in sorted(counts.items()):
            nested.setdefault(service, {}).setdefault(operation, {})[fault] = n
            totals[fault] += n
        return {"settings": settings.as_json(), "totals": totals, "counts": nested}


# -- HTTP messages ------------------------------------------------------------------------------


class BadMessage(Exception):
    """The peer sent something that is not HTTP/1.1 as this proxy reads it."""


def _read_line(rfile: io.BufferedReader) -> bytes:
    line = rfile.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise BadMessage("line too long")
    if not line.endswith(b"\n"):
        raise ConnectionError("connection closed in the middle of a message")
    return line


@dataclass
class Head:
    """A message's start line and header lines, kept as received (CRLF included)."""

    start: bytes
    lines: list[bytes]
    headers: dict[str, str]  # lower-case names; a repeated header's values joined with ", "

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    def tokens(self, name: str) -> list[str]:
        return [t.strip().lower() for t in self.header(name).split(",") if t.strip()]

    def wants_close(self) -> bool:
        """Whether the connection ends after this message (RFC 9112 section 9.3)."""
        connection = self.tokens("connection")
        http10 = self.start.startswith(b"HTTP/1.0 ") or self.start.endswith(b" HTTP/1.0")
        return "close" in connection or (http10 and "keep-alive" not in connection)

    def chunked(self) -> bool:
        codings = self.tokens("transfer-encoding")
        return bool(codings) and codings[-1] == "chunked"

    def content_length(self) -> int | None:
        value = self.header("content-length")
        if not value:
            return None
        if not value.isdigit():
            raise BadMessage(f"bad Content-Length {value!r}")
        return int(value)

    def relayed(self, without: frozenset[str] = frozenset(), close: bool = False) -> bytes:
        """The head as received, less its hop-by-hop headers and those named in `without`;
        with ``Connection: close`` if the connection it goes on ends after it."""
        dropped = HOP_BY_HOP | without | set(self.tokens("connection"))
        kept = [
            line
            for line in self.lines
            if line.split(b":", 1)[0].strip().lower().decode("latin-1") not in dropped
        ]
        return b"".join(
            [self.start, CRLF, *kept, *([b"Connection: close\r\n"] if close else []), CRLF]
        )


def read_head(rfile: io.BufferedReader) -> Head | None:
    """The next message's head, or None if the connection ends cleanly before one."""
    start = b""
    while start in (b"", CRLF, b"\n"):  # empty lines before a request are ignored (RFC 9112)
        start = rfile.readline(MAX_LINE + 1)
        if not start:
            return None
    if not start.endswith(b"\n") or len(start) > MAX_LINE:
        raise BadMessage("bad start line")
    lines: list[bytes] = []
    headers: dict[str, str] = {}
    while (line := _read_line(rfile)) not in (CRLF, b"\n"):
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or len(lines) == MAX_HEADERS:
            raise BadMessage(f"bad header line {line[:80]!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
        lines.append(line)
    return Head(start.rstrip(b"\r\n"), lines, headers)


@dataclass
class Request:
    """A request head with its parts, and what of its body has been read ahead."""

    head: Head
    method: str
    path: str
    query: dict[str, list[str]]
    expects_continue: bool
    continued: bool = False
    form: bytes = b""  # the read-ahead start of a query-protocol body

    @classmethod
    def parse(cls, head: Head) -> Request:
        parts = head.start.decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise BadMessage(f"bad request line {head.start[:80]!r}")
        url = urlsplit(parts[1])
        expects = head.header("expect").lower() == "100-continue" and parts[2] == "HTTP/1.1"
        return cls(head, parts[0], url.path, parse_qs(url.query, keep_blank_values=True), expects)


def copy_exact(rfile: io.BufferedReader, length: int, write: Write) -> None:
    """Copy `length` bytes as they arrive, CHUNK at most at a time."""
    while length:
        data = rfile.read1(min(length, CHUNK))
        if not data:
            raise ConnectionError("connection closed in the middle of a body")
        write(data)
        length -= len(data)


def copy_chunked(rfile: io.BufferedReader, write: Write) -> None:
    """Relay a chunked body as framed: chunk sizes, extensions, data, trailers."""
    while True:
        line = _read_line(rfile)
        write(line)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadMessage(f"bad chunk size line {line[:80]!r}") from None
        if size == 0:
            break
        copy_exact(rfile, size + 2, write)  # the data and its CRLF
    while True:
        line = _read_line(rfile)
        write(line)
        if line in (CRLF, b"\n"):
            return


def copy_request_body(request: Request, rfile: io.BufferedReader, write: Write) -> None:
    head = request.head
    if head.chunked():
        copy_chunked(rfile, write)
        return
    write(request.form)
    copy_exact(rfile, (head.content_length() or 0) - len(request.form), write)


def _has_body(response: Head, method: str) -> bool:
    status = response.start.split(b" ", 2)[1:2]
    if not status or not status[0].isdigit():
        raise BadMessage(f"bad status line {response.start[:80]!r}")
    return method != "HEAD" and int(status[0]) >= 200 and int(status[0]) not in (204, 304)


def runs_to_close(response: Head, method: str) -> bool:
    """Whether a response's body ends only when its connection does."""
    return (
        _has_body(response, method) and not response.chunked() and response.content_length() is None
    )


def copy_response_body(response: Head, method: str, rfile: io.BufferedReader, write: Write) -> None:
    if not _has_body(response, method):
        return
    if response.chunked():
        copy_chunked(rfile, write)
    elif (length := response.content_length()) is not None:
        copy_exact(rfile, length, write)
    else:
        while data := rfile.read1(CHUNK):
            write(data)


def _discard(_: bytes) -> None:
    """A body's destination when nobody gets it."""


# -- which service and operation a request is ---------------------------------------------------

_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")

# S3 (path-style, as botocore addresses a local endpoint): (method, level, marker) → operation,
# the marker being the request's first significant query key, "+copy" with x-amz-copy-source.
_S3_MARKERS = (
    "uploadId",
    "uploads",
    "restore",
    "tagging",
    "list-type",
    "versions",
    "delete",
    "location",
    "lifecycle",
    "notification",
    "versioning",
    "policy",
    "attributes",
)
_S3 = {
    ("GET", "service", ""): "ListBuckets",
    ("GET", "bucket", ""): "ListObjects",
    ("GET", "bucket", "list-type"): "ListObjectsV2",
    ("GET", "bucket", "versions"): "ListObjectVersions",
    ("GET", "bucket", "uploads"): "ListMultipartUploads",
    ("HEAD", "bucket", ""): "HeadBucket",
    ("PUT", "bucket", ""): "CreateBucket",
    ("DELETE", "bucket", ""): "DeleteBucket",
    ("POST", "bucket", "delete"): "DeleteObjects",
    ("GET", "bucket", "location"): "GetBucketLocation",
    ("GET", "bucket", "lifecycle"): "GetBucketLifecycleConfiguration",
    ("PUT", "bucket", "lifecycle"): "PutBucketLifecycleConfiguration",
    ("GET", "bucket", "notification"): "GetBucketNotificationConfiguration",
    ("PUT", "bucket", "notification"): "PutBucketNotificationConfiguration",
    ("GET", "bucket", "versioning"): "GetBucketVersioning",
    ("PUT", "bucket", "versioning"): "PutBucketVersioning",
    ("GET", "bucket", "policy"): "GetBucketPolicy",
    ("PUT", "bucket", "policy"): "PutBucketPolicy",
    ("DELETE", "bucket", "policy"): "DeleteBucketPolicy",
    ("GET", "object", ""): "GetObject",
    ("HEAD", "object", ""): "HeadObject",
    ("PUT", "object", ""): "PutObject",
    ("PUT", "object", "+copy"): "CopyObject",
    ("DELETE", "object", ""): "DeleteObject",
    ("POST", "object", "uploads"): "CreateMultipartUpload",
    ("PUT", "object", "uploadId"): "UploadPart",
    ("PUT", "object", "uploadId+copy"): "UploadPartCopy",
    ("POST", "object", "uploadId"): "CompleteMultipartUpload",
    ("DELETE", "object", "uploadId"): "AbortMultipartUpload",
    ("GET", "object", "uploadId"): "ListParts",
    ("POST", "object", "restore"): "RestoreObject",
    ("GET", "object", "tagging"): "GetObjectTagging",
    ("PUT", "object", "tagging"): "PutObjectTagging",
    ("GET", "object", "attributes"): "GetObjectAttributes",
}
_S3_SHAPES = {"service": "/", "bucket": "/{bucket}", "object": "/{bucket}/{key}"}

# Glacier: (method, path shape) → operation; the shape keeps every other segment after the
# account (vaults, archives, jobs ...) and stars the names and ids between them.
_GLACIER = {
    ("GET", "vaults"): "ListVaults",
    ("PUT", "vaults/*"): "CreateVault",
    ("GET", "vaults/*"): "DescribeVault",
    ("DELETE", "vaults/*"): "DeleteVault",
    ("POST", "vaults/*/archives"): "UploadArchive",
    ("DELETE", "vaults/*/archives/*"): "DeleteArchive",
    ("POST", "vaults/*/multipart-uploads"): "InitiateMultipartUpload",
    ("GET", "vaults/*/multipart-uploads"): "ListMultipartUploads",
    ("PUT", "vaults/*/multipart-uploads/*"): "UploadMultipartPart",
    ("POST", "vaults/*/multipart-uploads/*"): "CompleteMultipartUpload",
    ("DELETE", "vaults/*/multipart-uploads/*"): "AbortMultipartUpload",
    ("GET", "vaults/*/multipart-uploads/*"): "ListParts",
    ("POST", "vaults/*/jobs"): "InitiateJob",
    ("GET", "vaults/*/jobs"): "ListJobs",
    ("GET", "vaults/*/jobs/*"): "DescribeJob",
    ("GET", "vaults/*/jobs/*/output"): "GetJobOutput",
    ("PUT", "vaults/*/notification-configuration"): "SetVaultNotifications",
    ("GET", "vaults/*/notification-configuration"): "GetVaultNotifications",
    ("DELETE", "vaults/*/notification-configuration"): "DeleteVaultNotifications",
    ("PUT", "vaults/*/access-policy"): "SetVaultAccessPolicy",
    ("GET", "vaults/*/access-policy"): "GetVaultAccessPolicy",
    ("DELETE", "vaults/*/access-policy"): "DeleteVaultAccessPolicy",
}


def service_of(request: Request) -> str:
    """The service of a SigV4 request's credential scope (header or presigned query)."""
    if request.path.startswith("/moto-api/"):
        return "moto-api"
    credential = "Credential=" + request.query.get("X-Amz-Credential", [""])[0]
    match = _SCOPE.search(request.head.header("authorization")) or _SCOPE.search(credential)
    return match.group(1) if match else "unknown"


def is_form(request: Request) -> bool:
    """A query-protocol request (SNS, SES, STS, IAM): its Action is in a form body."""
    content_type = request.head.header("content-type").lower()
    return (
        content_type.startswith("application/x-www-form-urlencoded")
        and not request.head.chunked()
        and bool(request.head.content_length())
    )


def _s3_operation(request: Request) -> str:
    bucket, _, key = request.path.lstrip("/").partition("/")
    level = "object" if key else "bucket" if bucket else "service"
    marker = next((m for m in _S3_MARKERS if m in request.query), "")
    if request.head.header("x-amz-copy-source"):
        marker += "+copy"
    unknown = f"{request.method} {_S3_SHAPES[level]}" + (
        "?" + "&".join(sorted(request.query)) if request.query else ""
    )
    return _S3.get((request.method, level, marker), unknown)


def _glacier_operation(request: Request) -> str:
    segments = request.path.strip("/").split("/")[1:]
    shape = "/".join(s if i % 2 == 0 else "*" for i, s in enumerate(segments))
    return _GLACIER.get((request.method, shape), f"{request.method} /*/{shape}")


def operation_of(request: Request, service: str) -> str:
    """The operation: from X-Amz-Target (JSON), Action (query), or method and path (REST)."""
    if target := request.head.header("x-amz-target"):
        return target.rpartition(".")[2]
    if action := parse_qs(request.form.decode("latin-1")).get("Action"):
        return action[0]
    if service == "s3":
        return _s3_operation(request)
    if service == "glacier":
        return _glacier_operation(request)
    if service == "moto-api":
        return f"{request.method} {request.path}"
    return f"{request.method} /" + "/".join("*" for s in request.path.strip("/").split("/") if s)


# -- AWS-shaped errors --------------------------------------------------------------------------

_MESSAGE = "injected by localaws.faults"
# An error's status, content type, request-id header and body.
Rendered = tuple[int, str, str, bytes]


def _json_error(service: str, throttle: bool, request_id: str) -> Rendered:
    """JSON protocol (DynamoDB, SQS): ``__type`` names the error."""
    if throttle:
        status, code = 400, "ThrottlingException"
    else:
        status, code = 500, "InternalServerError" if service == "dynamodb" else "InternalFailure"
    body = {"__type": f"com.amazonaws.{service}#{code}", "message": f"{code}: {_MESSAGE}"}
    return status, "application/x-amz-json-1.0", "x-amzn-RequestId", json.dumps(body).encode()


def _query_error(service: str, throttle: bool, request_id: str) -> Rendered:
    """Query protocol (SNS, SES, STS, IAM): an XML ErrorResponse."""
    status, code, kind = (
        (400, "Throttling", "Sender") if throttle else (500, "InternalFailure", "Receiver")
    )
    body = (
        f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code>"
        f"<Message>{code}: {_MESSAGE}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return status, "text/xml", "x-amzn-RequestId", body.encode()


def _s3_error(service: str, throttle: bool, request_id: str) -> Rendered:
    """S3's REST-XML: an XML Error; SlowDown is S3's throttling, with status 503."""
    status, code = (503, "SlowDown") if throttle else (500, "InternalError")
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{code}: {_MESSAGE}</Message><RequestId>{request_id}</RequestId></Error>"
    )
    return status, "application/xml", "x-amz-request-id", body.encode()


def _rest_json_error(service: str, throttle: bool, request_id: str) -> Rendered:
    """REST-JSON (Glacier, and any other REST service): ``code`` names the error."""
    status, code, kind = (
        (400, "ThrottlingException", "Client")
        if throttle
        else (500, "ServiceUnavailableException", "Server")
    )
    body = {"code": code, "message": f"{code}: {_MESSAGE}", "type": kind}
    return status, "application/json", "x-amzn-RequestId", json.dumps(body).encode()


def render_error(request: Request, service: str, throttle: bool) -> bytes:
    """A whole HTTP response: a throttling error or a 5xx in the request's wire protocol,
    told by its X-Amz-Target (JSON), its form body's Action (query), or its service (REST)."""
    if request.head.header("x-amz-target"):
        renderer = _json_error
    elif request.form:
        renderer = _query_error
    else:
        renderer = _s3_error if service == "s3" else _rest_json_error
    request_id = str(uuid.uuid4())
    status, content_type, id_header, body = renderer(service, throttle, request_id)
    return _response(
        status,
        {"Content-Type": content_type, id_header: request_id},
        b"" if request.method == "HEAD" else body,
        close=request.head.wants_close(),
    )


def _response(status: int, headers: dict[str, str], body: bytes, close: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        *(f"{name}: {value}" for name, value in headers.items()),
        f"Content-Length: {len(body)}",
        *(["Connection: close"] if close else []),
    ]
    return "\r\n".join([*lines, "", ""]).encode("latin-1") + body


# -- the proxy ----------------------------------------------------------------------------------


class FaultProxy(socketserver.ThreadingTCPServer):
    """Listens on 127.0.0.1; one thread per client connection, each with its upstream one."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 drops connections when many workers start

    def __init__(self, port: int, upstream: str, faults: Faults):
        url = urlsplit(upstream)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"the upstream must be an http:// URL, not {upstream!r}")
        self.upstream = (url.hostname, url.port or 80)
        self.faults = faults
        super().__init__(("127.0.0.1", port), _Connection)

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"  # type: ignore[str-bytes-safe]  # AF_INET: a str


class _Connection(socketserver.BaseRequestHandler):
    """One client connection: its requests in turn, each faulted or forwarded."""

    server: FaultProxy
    request: socket.socket

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.request.makefile("rb")
        self.upstream: socket.socket | None = None
        self.upstream_rfile: io.BufferedReader | None = None
        self.pacers = (Pacer(), Pacer())  # requests' bodies, answers' bodies

    def handle(self) -> None:
        try:
            while self.exchange():
                pass
        except (OSError, BadMessage) as exc:
            print(f"faults: connection closed: {exc!r}", file=sys.stderr, flush=True)

    def finish(self) -> None:
        self.rfile.close()
        self._close_upstream()

    def exchange(self) -> bool:
        """Handle one request; whether the connection goes on."""
        head = read_head(self.rfile)
        if head is None:
            return False
        request = Request.parse(head)
        if request.path == CONTROL_PATH:
            return self.control(request)
        faults = self.server.faults
        service = service_of(request)
        if is_form(request):
            self.continue_(request)
            request.form = self.rfile.read(min(head.content_length() or 0, FORM_PREFIX))
        decision = faults.choose() if faults.applies_to(service) else Decision(FORWARDED)
        faults.count(service, operation_of(request, service), decision.fault)
        if decision.fault == RESET:
            self.reset()
            return False
        self.continue_(request)
        if decision.fault == ERROR:
            copy_request_body(request, self.rfile, _discard)
            self.request.sendall(render_error(request, service, decision.throttle))
            return not head.wants_close()
        time.sleep(decision.latency)
        rate = faults.settings.rate_mb_s * 1e6 if faults.applies_to(service) else 0.0
        return self.forward(request, lost=decision.fault == LOST, rate=rate)

    def continue_(self, request: Request) -> None:
        """Answer ``100 Continue`` once, when the body is about to be read."""
        if request.expects_continue and not request.continued:
            self.request.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.continued = True

    def forward(self, request: Request, lost: bool, rate: float = 0.0) -> bool:
        """Send the request upstream and relay its answer (or, `lost`, drop it and close),
        bodies paced to `rate` bytes per second each way."""
        upstream, upstream_rfile = self._upstream()
        handled = frozenset({"expect"}) if request.expects_continue else frozenset()
        upstream.sendall(request.head.relayed(without=handled))
        copy_request_body(request, self.rfile, self.pacers[0].paced(upstream.sendall, rate))
        response = read_head(upstream_rfile)
        if response is None:
            raise ConnectionError("the upstream closed the connection without an answer")
        to_close = runs_to_close(response, request.method)
        close = to_close or request.head.wants_close()
        write = _discard if lost else self.request.sendall
        write(response.relayed(close=close))
        copy_response_body(
            response, request.method, upstream_rfile, self.pacers[1].paced(write, rate)
        )
        if to_close or response.wants_close():  # moto's server closes after every answer
            self._close_upstream()
        return not (lost or close)

    def control(self, request: Request) -> bool:
        """``GET /__faults__``: the report; ``POST /__faults__`` {settings}: change them."""
        faults = self.server.faults
        status, answer = 200, faults.report()
        if request.method == "POST":
            self.continue_(request)
            body = bytearray()
            copy_request_body(request, self.rfile, body.extend)
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the settings must be a JSON object")
                answer = faults.configure(changes).as_json()
            except (ValueError, TypeError) as exc:
                status, answer = 400, {"error": str(exc)}
        elif request.method != "GET":
            status, answer = 405, {"error": "GET or POST"}
        self.request.sendall(
            _response(
                status,
                {"Content-Type": "application/json"},
                json.dumps(answer).encode(),
                close=request.head.wants_close(),
            )
        )
        return not request.head.wants_close()

    def reset(self) -> None:
        """Close the client connection with a TCP reset."""
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.request.close()

    def _upstream(self) -> tuple[socket.socket, io.BufferedReader]:
        if self.upstream is None or self.upstream_rfile is None:
            self.upstream = socket.create_connection(self.server.upstream)
            self.upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.upstream_rfile = self.upstream.makefile("rb")
        return self.upstream, self.upstream_rfile

    def _close_upstream(self) -> None:
        if self.upstream is not None and self.upstream_rfile is not None:
            self.upstream_rfile.close()
            self.upstream.close()
        self.upstream = self.upstream_rfile = None


# -- the command and its Python helpers ---------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line of ``python -m util.local faults``."""
    parser.add_argument(
        "--upstream",
        required=True,
        metavar="URL",
        help="where requests go: the local stack's AWS_ENDPOINT_URL",
    )
    parser.add_argument("--port", type=int, default=0, help="0 (the default) picks a free port")
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the fault decisions (default: 0)"
    )
    parser.add_argument(
        "--errors",
        type=float,
        default=0.0,
        metavar="P",
        help="answer a throttling error or a 5xx instead of forwarding",
    )
    parser.add_argument(
        "--resets",
        type=float,
        default=0.0,
        metavar="P",
        help="reset the connection before forwarding",
    )
    parser.add_argument(
        "--lost",
        type=float,
        default=0.0,
        metavar="P",
        help="forward, then drop the answer and close the connection",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="delay before forwarding each request",
    )
    parser.add_argument(
        "--rate-mb-s",
        type=float,
        default=0.0,
        metavar="R",
        help="cap each connection's bodies at R MB/s each way (0: no cap)",
    )
    parser.add_argument(
        "--services",
        metavar="s3,glacier,...",
        help="fault only these services' requests (default: all)",
    )


def main(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM, then print the totals."""
    services = (
        None
        if args.services is None
        else frozenset(s.strip() for s in args.services.split(",") if s.strip())
    )
    try:
        faults = Faults(
            Settings(
                errors=args.errors,
                resets=args.resets,
                lost=args.lost,
                latency_ms=args.latency_ms,
                rate_mb_s=args.rate_mb_s,
                services=services,
            ),
            args.seed,
        )
        proxy = FaultProxy(args.port, args.upstream, faults)
    except (ValueError, OSError) as exc:
        print(f"faults: {exc}", file=sys.stderr)
        return 2
    threading.Thread(
        target=proxy.serve_forever, args=(0.05,), name="faults-proxy", daemon=True
    ).start()
    announce_and_wait({"AWS_ENDPOINT_URL": proxy.endpoint})
    proxy.shutdown()
    proxy.server_close()
    totals = faults.report()["totals"]
    print(
        f"faults: {sum(totals.values())} requests: "
        + ", ".join(f"{n} {fault}" for fault, n in totals.items()),
        flush=True,
    )
    return 0


def launch(
    upstream: str,
    port: int = 0,
    seed: int = 0,
    errors: float = 0.0,
    resets: float = 0.0,
    lost: float = 0.0,
    latency_ms: float = 0.0,
    services: list[str] | None = None,
    rate_mb_s: float = 0.0,
) -> tuple[subprocess.Popen, str]:
    """Start `python -m util.local faults` and return it with its endpoint URL."""
    command = [
        sys.executable,
        "-m",
        "localaws",
        "faults",
        "--upstream",
        upstream,
        "--port",
        str(port),
        "--seed",
        str(seed),
        "--errors",
        str(errors),
        "--resets",
        str(resets),
        "--lost",
        str(lost),
        "--latency-ms",
        str(latency_ms),
        "--rate-mb-s",
        str(rate_mb_s),
    ]
    if services is not None:
        command += ["--services", ",".join(services)]
    # stderr goes to a file, not a pipe: an unread pipe fills up and blocks the proxy.
    errors_file = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        command,
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=errors_file,
        text=True,
    )
    assert process.stdout is not None
    endpoint = ""
    for line in process.stdout:
        line = line.strip()
        if line == "ready":
            return process, endpoint
        if line.startswith("export AWS_ENDPOINT_URL="):
            endpoint = line.partition("=")[2]
    process.wait()
    errors_file.seek(0)
    raise RuntimeError(f"faults proxy did not start: {errors_file.read().strip()}")


def _call(endpoint: str, body: dict[str, Any] | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        endpoint + CONTROL_PATH, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def counts(endpoint: str) -> dict:
    """The proxy's report: ``{"settings", "totals", "counts"}``, the counts being
    ``{service: {operation: {fault: n}}}``."""
    return _call(endpoint)


def configure(endpoint: str, **settings: Any) -> dict:
    """Change the proxy's settings (errors, resets, lost, latency_ms, rate_mb_s, services); the
    new ones."""
    return _call(endpoint, settings)
