"""Notify: e-mail the user (SES) when an annotation job has finished (docs/utilities.md#notify).

For each job-results message: the job and the user are read (never believed from the
message), subject, text and HTML are rendered from the templates of the job's state, the
sending is claimed on the job (a lease: a second copy of the message waits for it), the e-mail
is sent, and ``notified_time`` recorded once. Sending comes before recording: a crash between
the two means a second e-mail once the claim has lapsed, never none.
"""

from __future__ import annotations

import html
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote

if __package__ in (None, ""):  # run as `python util/notify/notify.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from botocore.exceptions import BotoCoreError, ClientError

from util import process
from util.aws import Aws
from util.helpers import Annotations, InvalidMessage, User, Users, Write
from util.leases import EMAIL_CLAIM
from util.messages import Message, Outcome, defer, done, require_str, retry
from util.schema import (
    COMPLETE_TIME,
    COMPLETED,
    FAILED,
    INPUT_FILE_NAME,
    JOB_ID,
    JOB_STATUS,
    NOTIFIED_TIME,
    NOTIFY_CLAIM,
    NOTIFY_CLAIM_EXPIRES,
    SUBMIT_TIME,
)
from util.util_config import Config, ConfigError

HERE = Path(__file__).resolve().parent
# What a template may use; any other $name is refused at start, not when a job finishes.
PLACEHOLDERS = frozenset({"name", "job_id", "input_file", "submitted", "completed", "job_url"})
# SES's errors that no retry can fix: the address (or the sender) is refused.
PERMANENT_SES_ERRORS = frozenset({"MessageRejected", "InvalidParameterValue"})
# One bare address: no display name, no second address, no line break to smuggle a header in.
ADDRESS = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+")
_NAMES = {"#notified": NOTIFIED_TIME, "#claim": NOTIFY_CLAIM, "#expires": NOTIFY_CLAIM_EXPIRES}


@dataclass(frozen=True)
class Email:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Templates:
    """Subject, plain-text and HTML templates of one job state, as the operator wrote them."""

    subject: Template
    text: Template
    html: Template

    @classmethod
    def load(cls, directory: Path, state: str) -> Templates:
        """`<state>_subject.txt`, `<state>.txt` and `<state>.html` from `directory`."""
        return cls(
            *(
                _template(directory / f"{state}{suffix}")
                for suffix in ("_subject.txt", ".txt", ".html")
            )
        )

    def render(self, values: dict[str, str]) -> Email:
        escaped = {name: html.escape(value, quote=True) for name, value in values.items()}
        return Email(
            # One line, whatever the template or a file name holds: a subject is a header.
            subject=" ".join(self.subject.substitute(values).split()),
            text=self.text.substitute(values),
            html=self.html.substitute(escaped),
        )


def _template(path: Path) -> Template:
    try:
        template = Template(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"[notify] templates: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"[notify] templates: {path} is not UTF-8") from None
    if not template.is_valid():
        raise ConfigError(
            f"[notify] templates: {path} has a '$' that is no placeholder "
            f"(write $$ for a dollar sign)"
        )
    unknown = set(template.get_identifiers()) - PLACEHOLDERS
    if unknown:
        raise ConfigError(
            f"[notify] templates: {path} uses unknown placeholder(s) "
            f"{', '.join('$' + name for name in sorted(unknown))}; "
            f"known: {', '.join('$' + name for name in sorted(PLACEHOLDERS))}"
        )
    return template


def template_directory(setting: str) -> Path:
    """The configured directory; a relative path is taken from this utility's directory."""
    path = Path(setting).expanduser()
    return path if path.is_absolute() else HERE / path


def utc(epoch: Any) -> str:
    """An item's epoch seconds as people read them, e.g. ``14 Nov 2023, 22:13:20 UTC``."""
    if not isinstance(epoch, (int, float)):
        return "unknown"
    return f"{datetime.fromtimestamp(epoch, timezone.utc):%d %b %Y, %H:%M:%S} UTC"


class Notifier:
    """The notify handler: one message in, one outcome out."""

    def __init__(self, config: Config, aws: Aws, clock: Callable[[], float] = time.time):
        # Templates first: a broken one stops the worker at start (exit 2), before any AWS call.
        directory = template_directory(config.notify.templates)
        self.templates = {
            state: Templates.load(directory, state.lower()) for state in (COMPLETED, FAILED)
        }
        self.clock = clock
        self.sender = config.notify.sender
        self.claim_seconds = config.notify.claim_seconds
        self.web_url = config.gas.web_url.rstrip("/")
        self.jobs = Annotations(aws, config.gas.annotations_table)
        self.users = Users(aws, config.gas.users_table)
        self.ses = aws.client("ses")

    def __call__(self, message: Message) -> Outcome:
        job_id, user_id = require_str(message.data, "job_id", "user_id")
        job, user = self.jobs.get_owned_with_user(job_id, user_id, self.users)
        self.check_job(job)
        if NOTIFIED_TIME in job:
            return done("already notified")

        if user is None:
            raise InvalidMessage(f"unknown user {user_id}")
        if not ADDRESS.fullmatch(user.email):
            raise InvalidMessage(f"user {user_id} has no usable e-mail address")

        email = self.render(job, user)
        token, claim = self.claim(job_id)
        if not EMAIL_CLAIM.held(claim, token):
            return self.claimed_elsewhere(job_id, claim.item)
        try:
            self.send(user.email, email)
        except ClientError as exc:
            self.release(job_id, token)
            error = exc.response.get("Error", {})
            reason = f"SES {error.get('Code')}: {error.get('Message')}"
            if error.get("Code") in PERMANENT_SES_ERRORS:
                raise InvalidMessage(reason) from None
            # Throttling or an outage that outlasted botocore's retries: SQS brings it back.
            return retry(reason)
        except BotoCoreError as exc:
            self.release(job_id, token)
            return retry(f"SES unreachable: {exc}")

        recorded = self.record(job_id)
        if not EMAIL_CLAIM.held(recorded, token):
            return done("e-mailed; another copy of the message had also done so")
        return done(f"e-mailed ({job[JOB_STATUS]})")

    def claim(self, job_id: str) -> tuple[str, Write]:
        """Take the sending for `claim_seconds`, unless it is done or another copy holds it:
        our token, and the write."""
        return EMAIL_CLAIM.take(
            self.jobs,
            job_id,
            self.claim_seconds,
            int(self.clock()),
            when="attribute_not_exists(#notified)",
            names=_NAMES,
        )

    def claimed_elsewhere(self, job_id: str, job: dict[str, Any]) -> Outcome:
        """Why the claim failed, from the item as the claim found it."""
        if not job:
            raise InvalidMessage(f"job {job_id} was deleted")
        if NOTIFIED_TIME in job:
            return done("already notified")
        if NOTIFY_CLAIM_EXPIRES not in job:  # that copy failed to send and let go
            return retry("another copy of the message gave up e-mailing")
        # Look again once that copy's claim has lapsed: by then it has recorded its e-mail,
        # or it crashed and this message sends it.
        return defer(
            job[NOTIFY_CLAIM_EXPIRES] - self.clock() + 1,
            "another copy of the message is being e-mailed",
        )

    def release(self, job_id: str, token: str) -> None:
        """Give up our claim (only ours) after a failed send."""
        EMAIL_CLAIM.release(self.jobs, job_id, token)

    def record(self, job_id: str) -> Write:
        """Record the e-mail, unless one is recorded already."""
        return self.jobs.update_if(
            job_id,
            "SET #notified = :now REMOVE #expires",
            "attribute_not_exists(#notified)",
            _NAMES,
            {":now": int(self.clock())},
        )

    def check_job(self, job: dict[str, Any]) -> None:
        """InvalidMessage saying why no e-mail is due for the job, if none is."""
        if job.get(JOB_STATUS) not in self.templates:
            raise InvalidMessage(
                f"job {job[JOB_ID]} is {job.get(JOB_STATUS)}, not {COMPLETED} or {FAILED}"
            )

    def render(self, job: dict[str, Any], user: User) -> Email:
        job_id = job[JOB_ID]
        return self.templates[job[JOB_STATUS]].render(
            {
                "name": user.name or user.email,
                "job_id": job_id,
                "input_file": str(job.get(INPUT_FILE_NAME) or job_id),
                "submitted": utc(job.get(SUBMIT_TIME)),
                "completed": utc(job.get(COMPLETE_TIME)),
                "job_url": f"{self.web_url}/annotations/{quote(job_id, safe='')}",
            }
        )

    def send(self, address: str, email: Email) -> None:
        self.ses.send_email(
            Source=self.sender,
            Destination={"ToAddresses": [address]},
            Message={
                "Subject": {"Data": email.subject, "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": email.text, "Charset": "UTF-8"},
                    "Html": {"Data": email.html, "Charset": "UTF-8"},
                },
            },
        )


def main(argv: list[str] | None = None) -> int:
    return process.main("notify", Notifier, argv)


if __name__ == "__main__":
    sys.exit(main())
