"""Mutation check: does the suite notice when a guard of the product code is removed?

Each mutant is one small edit of one file (an exact snippet and its replacement) and the test
files that should notice it. The repository is copied once to a temporary directory; for each
mutant the edit is made there, only its tests run (``-x``: the first failure is enough), and
the file is put back. A mutant is *killed* when its tests fail, *survived* when they pass,
and *does not apply* when its snippet is not found exactly once: the code moved, and the list
must follow it (reported loudly, and the run fails).

    python -m tests.mutate                 # every mutant
    python -m tests.mutate -k thaw -k glacier  # the mutants whose name contains either
    python -m tests.mutate --list          # names, files, tests; exit 1 if one no longer applies

Each mutant runs the unit test files of what it changes, not the exhaustive explorations
(test_interleavings.py, test_crash_at_every_call.py: minutes each): a guard only they notice
is a gap in the unit tests. Mutants listed in EQUIVALENT are expected to survive (they change no behaviour a test can
see); they are run and reported apart, and not counted in the score.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SCORE = 0.9
MUTANT_TIMEOUT = 600  # seconds; a mutant whose tests hang past pytest's own timeout is killed

ARCHIVE = "util/archive/archive.py"
RESTORE = "util/restore/restore.py"
RETRIEVAL = "util/retrieval.py"
LEASES = "util/leases.py"
THAW = "util/thaw/thaw.py"
NOTIFY = "util/notify/notify.py"
WORKER = "util/worker.py"
SQS = "util/sqs.py"
MESSAGES = "util/messages.py"
GLACIER = "util/archives/vault/glacier.py"
VAULT = "util/archives/vault/__init__.py"
S3_BACKEND = "util/archives/s3.py"
HELPERS = "util/helpers.py"
AWS = "util/aws.py"
RECONCILE = "util/reconcile/reconcile.py"
REPAIRS = "util/reconcile/repairs.py"
RECONCILE_REPORT = "util/reconcile/report.py"
UTIL_CONFIG = "util/util_config.py"
PROCESS = "util/process.py"

T_ARCHIVE = "tests/unit/test_archive.py"
T_RESTORE = "tests/unit/test_restore.py"
T_THAW = "tests/unit/test_thaw.py"
T_NOTIFY = "tests/unit/test_notify.py"
T_WORKER = "tests/unit/test_worker.py"
T_S3 = "tests/unit/test_s3_backend.py"
T_TRANSFERS = "tests/unit/test_transfers.py"
T_RECONCILE = "tests/unit/test_reconcile.py"
T_CONFIG = "tests/unit/test_config.py"
T_LOGGING = "tests/unit/test_process_logging.py"
T_START = "tests/integration/test_start_and_once_process.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]


M = Mutant
MUTANTS: list[Mutant] = [
    # -- archive ---------------------------------------------------------------------------
    M(
        "archive: redelivery of an archived job is not finished",
        ARCHIVE,
        'if ARCHIVE_ID in job:\n            return self.finish(job, "already archived")',
        'if False:\n            return self.finish(job, "already archived")',
        (T_ARCHIVE,),
    ),
    M(
        "archive: unknown user accepted",
        ARCHIVE,
        'if user is None:\n            raise InvalidMessage(f"unknown user {user_id}")\n'
        "        if user.is_premium:",
        'if False:\n            raise InvalidMessage(f"unknown user {user_id}")\n'
        "        if user.is_premium:",
        (T_ARCHIVE,),
    ),
    M(
        "archive: premium user's result archived",
        ARCHIVE,
        "        if user.is_premium:\n            return done(",
        "        if False:\n            return done(",
        (T_ARCHIVE,),
    ),
    M(
        "archive: no grace period",
        ARCHIVE,
        "        if wait > 0:",
        "        if False:",
        (T_ARCHIVE,),
    ),
    M(
        "archive: missing result not looked at",
        ARCHIVE,
        "        if source is None:\n            return self.result_missing(job_id)\n        if",
        "        if False:\n            return self.result_missing(job_id)\n        if",
        (T_ARCHIVE,),
    ),
    M(
        "archive: empty result sent to the archive",
        ARCHIVE,
        "if source.size == 0:",
        "if False:",
        (T_ARCHIVE,),
    ),
    M(
        "archive: a cancelled upload counts as done",
        ARCHIVE,
        'return retry("worker stopping: upload abandoned")',
        'return done("worker stopping: upload abandoned")',
        (T_ARCHIVE,),
    ),
    M(
        "archive: a result changed during the upload is not retried",
        ARCHIVE,
        "            if code in S3_PRECONDITION_FAILED:\n                return retry(",
        "            if False:\n                return retry(",
        (T_ARCHIVE,),
    ),
    M(
        "archive: job status not checked",
        ARCHIVE,
        "if job.get(JOB_STATUS) != COMPLETED:",
        "if False:",
        (T_ARCHIVE,),
    ),
    M(
        "archive: results bucket not checked",
        ARCHIVE,
        "if job.get(RESULTS_BUCKET) != self.results_bucket or not job.get(RESULT_KEY):\n"
        "            raise InvalidMessage(\n",
        "if not job.get(RESULT_KEY):\n            raise InvalidMessage(\n",
        (T_ARCHIVE,),
    ),
    M(
        "archive: complete_time not checked",
        ARCHIVE,
        "if not isinstance(job.get(COMPLETE_TIME), (int, float)):",
        "if False:",
        (T_ARCHIVE,),
    ),
    M(
        "archive: a recorded upload of other content is resumed",
        ARCHIVE,
        'if pending and pending.get("etag") == source.etag:',
        "if pending:",
        (T_ARCHIVE,),
    ),
    M(
        "archive: upload recorded over a recorded archive",
        ARCHIVE,
        '"attribute_not_exists(#archive)",',
        '"attribute_exists(#job_id)",',
        (T_ARCHIVE,),
    ),
    M(
        "archive: archive recorded although a thaw happened since",
        ARCHIVE,
        '+ ("attribute_not_exists(#thaw)" if thawed is None else "#thaw = :thaw")',
        '+ "attribute_exists(#job_id)"',
        (T_ARCHIVE,),
    ),
    M(
        "archive: archive recorded over another",
        ARCHIVE,
        '"attribute_not_exists(#archive) AND "\n                + (',
        '"attribute_exists(#job_id) AND "\n                + (',
        (T_ARCHIVE,),
    ),
    M(
        "archive: an orphan archive is kept",
        ARCHIVE,
        "self.backend.delete(archive_id)  # an orphan",
        "pass  # an orphan",
        (T_ARCHIVE,),
    ),
    M(
        "archive: recorded although the user became premium",
        ARCHIVE,
        "while_free=(self.users, job[USER_ID]),",
        "while_free=None,",
        (T_ARCHIVE,),
    ),
    M(
        "archive: a refused archive's upload stays recorded",
        ARCHIVE,
        'self.jobs.update_if(job_id, "REMOVE #upload", "attribute_exists(#upload)", _NAMES)',
        "pass",
        (T_ARCHIVE,),
    ),
    M(
        "archive: the archive of a user who became premium is kept",
        ARCHIVE,
        '        self.backend.delete(archive_id)\n        return done("user became premium',
        '        return done("user became premium',
        (T_ARCHIVE,),
    ),
    M(
        "archive: S3 result deleted whatever its ETag",
        ARCHIVE,
        "Key=job[RESULT_KEY], IfMatch=etag)",
        "Key=job[RESULT_KEY])",
        (T_ARCHIVE,),
    ),
    M(
        "archive: a result archived by a racing copy is invalid",
        ARCHIVE,
        'if ARCHIVE_ID in job:\n            return self.finish(job, "archived by another worker")',
        'if False:\n            return self.finish(job, "archived by another worker")',
        (T_ARCHIVE,),
    ),
    M(
        "helpers: a cancelled record's item not looked at",
        HELPERS,
        'if item.get("Code") == "ConditionalCheckFailed":',
        "if False:",
        (T_ARCHIVE,),
    ),
    M(
        "helpers: a job DynamoDB left unprocessed read as missing",
        HELPERS,
        "job = self.get(job_id) if self.table in unprocessed else found.get(self.table)",
        "job = found.get(self.table)",
        (T_ARCHIVE,),
    ),
    M(
        "helpers: a user DynamoDB left unprocessed read as unknown",
        HELPERS,
        "        if users.table in unprocessed:\n",
        "        if False:\n",
        (T_ARCHIVE,),
    ),
    M(
        "helpers: a premium user passes the free check",
        HELPERS,
        '"attribute_exists(#user) AND #role <> :premium"',
        '"attribute_exists(#user)"',
        (T_ARCHIVE,),
    ),
    M(
        "backends: S3 archive's one-request copy not pinned to the ETag",
        S3_BACKEND,
        "                CopySourceIfMatch=source.etag,\n",
        "",
        (T_S3,),
    ),
    M(
        "backends: S3 archive copied in one request over an archive there",
        S3_BACKEND,
        '                IfNoneMatch="*",\n',
        "",
        (T_S3,),
    ),
    M(
        "backends: S3 archive copy refused for an archive there is an error",
        S3_BACKEND,
        "if not refused or self.head(key) is None:",
        "if True:",
        (T_S3,),
    ),
    M(
        "backends: S3 archive copy refused for a changed result taken as archived",
        S3_BACKEND,
        "if not refused or self.head(key) is None:",
        "if not refused:",
        (T_S3,),
    ),
    M(
        "backends: S3 archive's multipart copy of a changed result not told apart",
        S3_BACKEND,
        "        except S3CopyFailedError as exc:",
        "        except ZeroDivisionError as exc:",
        (T_S3,),
    ),
    M(
        "backends: an S3 archive in parts copied again over the first",
        S3_BACKEND,
        "if self.head(key) is not None:  # made before",
        "if False:",
        (T_S3,),
    ),
    # -- restore and the retrieval record ---------------------------------------------------
    M(
        "restore: a young copy delivered before looked at again, and again",
        RESTORE,
        'if outcome.action == "retry" or message.delivered_before or not young:',
        'if outcome.action == "retry" or not young:',
        (T_RESTORE,),
    ),
    M(
        "restore: a young message not looked at again once the index has settled",
        RESTORE,
        'if outcome.action == "retry" or message.delivered_before or not young:',
        "if True:",
        (T_RESTORE,),
    ),
    M(
        "restore: free user's results retrieved",
        RESTORE,
        "if not user.is_premium:",
        "if False:",
        (T_RESTORE,),
    ),
    M(
        "restore: unknown user accepted",
        RESTORE,
        'if user is None:\n            raise InvalidMessage(f"unknown user {user_id}")',
        'if False:\n            raise InvalidMessage(f"unknown user {user_id}")',
        (T_RESTORE,),
    ),
    M(
        "restore: failures counted as done",
        RESTORE,
        "        if failures:",
        "        if False:",
        (T_RESTORE,),
    ),
    M(
        "restore: results claimed elsewhere not looked at again",
        RESTORE,
        "        if pending:\n",
        "        if False:\n",
        (T_RESTORE,),
    ),
    M(
        "restore: no stop between results",
        RESTORE,
        "if message.cancelled.is_set():",
        "if False:",
        (T_RESTORE,),
    ),
    M(
        "leases: a live lease taken over",
        LEASES,
        'free = "(attribute_not_exists(#lease_expires) OR #lease_expires < :lease_now)"',
        'free = "attribute_exists(#lease_holder) OR attribute_not_exists(#lease_holder)"',
        (T_RESTORE, T_NOTIFY),
    ),
    M(
        "retrieval: claim taken on a job no longer archived",
        RETRIEVAL,
        'when="#archive = :archive",',
        'when="attribute_exists(#job_id)",',
        (T_RESTORE, T_THAW),
    ),
    M(
        "retrieval: a failed claim starts a retrieval",
        RETRIEVAL,
        "if RETRIEVAL_CLAIM.held(claimed, claim):",
        "if True:",
        (T_RESTORE,),
    ),
    M(
        "retrieval: a claim let go while waited for is not taken again",
        RETRIEVAL,
        "                return why\n            time.sleep(CLAIM_POLL_SECONDS)",
        '                return why\n            return Start("in progress")',
        (T_RESTORE,),
    ),
    M(
        "retrieval: a failed start keeps its claim",
        RETRIEVAL,
        "        except BaseException:\n            self.release(job_id, claim)\n",
        "        except BaseException:\n",
        (T_RESTORE,),
    ),
    M(
        "retrieval: no Expedited attempt",
        RETRIEVAL,
        "for tier in tiers[:-1]:",
        "for tier in tiers[:0]:",
        (T_RESTORE,),
    ),
    M(
        "retrieval: any Expedited error falls back to Standard",
        RETRIEVAL,
        "except ExpeditedUnavailable:",
        "except Exception:",
        (T_RESTORE,),
    ),
    M(
        "retrieval: a job thawed meanwhile reads as claimed",
        RETRIEVAL,
        'if job.get(ARCHIVE_ID) != archive_id:\n            return Start("not archived")',
        'if False:\n            return Start("not archived")',
        (T_RESTORE, T_THAW),
    ),
    M(
        "leases: a lapsed lease cleared whatever holds it now",
        LEASES,
        '"#lease_holder = :held AND #lease_expires = :expires",',
        '"attribute_exists(#lease_holder)",',
        (T_RECONCILE,),
    ),
    M(
        "leases: a release removes another's lease",
        LEASES,
        '"#lease_holder = :lease_token",',
        '"attribute_exists(#lease_holder)",',
        (T_RESTORE, T_NOTIFY),
    ),
    M(
        "retrieval: the record does not check the claim",
        RETRIEVAL,
        '"#job = :claim",\n            _NAMES,\n            {\n                ":retrieval": retrieval_id,',
        '"attribute_exists(#job_id)",\n            _NAMES,\n            {\n                ":retrieval": retrieval_id,',
        (T_RESTORE,),
    ),
    M(
        "retrieval: any recorded retrieval is cleared",
        RETRIEVAL,
        '"#job = :retrieval",',
        '"attribute_exists(#job_id)",',
        (T_THAW,),
    ),
    M(
        "retrieval: finish does not check the archive",
        RETRIEVAL,
        '            "#archive = :archive",\n',
        '            "attribute_exists(#job_id)",\n',
        (T_THAW,),
    ),
    # -- thaw --------------------------------------------------------------------------------
    M(
        "thaw: unknown job accepted",
        THAW,
        "if job is None:\n            raise InvalidMessage",
        "if False:\n            raise InvalidMessage",
        (T_THAW,),
    ),
    M(
        "thaw: a notice delivered again thaws again",
        THAW,
        "if job.get(THAW_JOB_ID) == notice.retrieval_id and (",
        "if False and (",
        (T_THAW,),
    ),
    M(
        "thaw: the archive gone is not invalid",
        THAW,
        "if notice.archive_id is not None and notice.archive_id == archive_id:",
        "if False:",
        (T_THAW, T_S3),
    ),
    M(
        "thaw: a notice of a job Glacier does not know is not invalid",
        THAW,
        "            if notice.archive_id is None:\n",
        "            if False:\n",
        (T_THAW,),
    ),
    M(
        "thaw: the recorded retrieval the back end forgot is not restarted",
        THAW,
        "if archive_id is not None and job.get(RESTORE_JOB_ID) == notice.retrieval_id:",
        "if False:",
        (T_THAW,),
    ),
    M(
        "thaw: a stale notice is thawed",
        THAW,
        "if archive_id is None or notice.archive_id != archive_id:",
        "if archive_id is None:",
        (T_THAW,),
    ),
    M(
        "thaw: a failed retrieval is not restarted",
        THAW,
        "if notice.status is Status.FAILED:",
        "if False:",
        (T_THAW,),
    ),
    M(
        "thaw: a retrieval in progress is copied",
        THAW,
        "if notice.status is not Status.SUCCEEDED:",
        "if False:",
        (T_THAW, T_S3),
    ),
    M(
        "thaw: results bucket not checked",
        THAW,
        "if job.get(RESULTS_BUCKET) != self.results_bucket or not job.get(RESULT_KEY):",
        "if not job.get(RESULT_KEY):",
        (T_THAW,),
    ),
    M(
        "thaw: a checksum mismatch counts as done",
        THAW,
        'return retry(f"nothing committed: {exc}")',
        'return done(f"nothing committed: {exc}")',
        (T_THAW,),
    ),
    M(
        "thaw: a cancelled copy counts as done",
        THAW,
        'return retry("worker stopping: copy abandoned")',
        'return done("worker stopping: copy abandoned")',
        (T_THAW,),
    ),
    M(
        "thaw: the finish is not checked",
        THAW,
        "if finished.holds(THAW_JOB_ID, notice.retrieval_id):",
        "if False:",
        (T_THAW,),
    ),
    M(
        "thaw: the archive is kept after another retrieval thawed it",
        THAW,
        "if finished.item.get(ARCHIVE_ID) is None:",
        "if False:",
        (T_THAW,),
    ),
    M(
        "thaw: a failed retrieval is restarted while another is under way",
        THAW,
        "if recorded not in (notice.retrieval_id, None):",
        "if False:",
        (T_THAW,),
    ),
    M(
        "thaw: a restart claimed elsewhere counts as done",
        THAW,
        'if start.status == "claimed elsewhere":',
        "if False:",
        (T_THAW,),
    ),
    M(
        "thaw: an archive Glacier forgot is deleted",
        THAW,
        "if archive_id is not None:  # None",
        "if True:  # None",
        (T_THAW,),
    ),
    # -- notify --------------------------------------------------------------------------------
    M(
        "notify: a second e-mail after success",
        NOTIFY,
        'if NOTIFIED_TIME in job:\n            return done("already notified")\n\n',
        'if False:\n            return done("already notified")\n\n',
        (T_NOTIFY,),
    ),
    M(
        "notify: unknown user accepted",
        NOTIFY,
        'if user is None:\n            raise InvalidMessage(f"unknown user {user_id}")',
        'if False:\n            raise InvalidMessage(f"unknown user {user_id}")',
        (T_NOTIFY,),
    ),
    M(
        "notify: any address accepted",
        NOTIFY,
        "if not ADDRESS.fullmatch(user.email):",
        "if False:",
        (T_NOTIFY,),
    ),
    M(
        "notify: a failed claim still sends",
        NOTIFY,
        "if not EMAIL_CLAIM.held(claim, token):",
        "if False:",
        (T_NOTIFY,),
    ),
    M(
        "notify: a claim taken after the e-mail was recorded",
        NOTIFY,
        'when="attribute_not_exists(#notified)",',
        'when="attribute_exists(#job_id)",',
        (T_NOTIFY,),
    ),
    M(
        "notify: a failed send keeps its claim",
        NOTIFY,
        "            self.release(job_id, token)\n            error =",
        "            error =",
        (T_NOTIFY,),
    ),
    M(
        "notify: an address SES refuses for good is retried",
        NOTIFY,
        'if error.get("Code") in PERMANENT_SES_ERRORS:',
        "if False:",
        (T_NOTIFY,),
    ),
    M(
        "notify: the record is not checked",
        NOTIFY,
        "if not EMAIL_CLAIM.held(recorded, token):",
        "if False:",
        (T_NOTIFY,),
    ),
    M(
        "notify: a released claim reads as a live one",
        NOTIFY,
        "if NOTIFY_CLAIM_EXPIRES not in job:",
        "if False:",
        (T_NOTIFY,),
    ),
    M(
        "notify: job status not checked",
        NOTIFY,
        "if job.get(JOB_STATUS) not in self.templates:",
        "if False:",
        (T_NOTIFY,),
    ),
    M(
        "notify: HTML not escaped",
        NOTIFY,
        "html=self.html.substitute(escaped)",
        "html=self.html.substitute(values)",
        (T_NOTIFY,),
    ),
    M(
        "notify: subject not kept to one line",
        NOTIFY,
        'subject=" ".join(self.subject.substitute(values).split())',
        "subject=self.subject.substitute(values)",
        (T_NOTIFY,),
    ),
    # -- the worker runtime --------------------------------------------------------------------
    M(
        "worker: no 12 h cap on visibility",
        SQS,
        "return max(0, min(seconds, left))",
        "return seconds",
        (T_WORKER,),
    ),
    M(
        "worker: no pause after a failed receive",
        WORKER,
        "pause = receive_backoff(failures, self.rng)",
        "pause = 0.0",
        (T_WORKER,),
    ),
    M(
        "worker: invalid messages retried",
        WORKER,
        "outcome = invalid(str(exc))",
        "outcome = retry(str(exc))",
        (T_WORKER,),
    ),
    M(
        "worker: invalid messages dropped without a dead letter",
        WORKER,
        "self.move_to_dead_letter(message, outcome.reason)\n",
        "\n",
        (T_WORKER,),
    ),
    M(
        "worker: done messages not deleted",
        WORKER,
        'elif outcome.action == "done":\n                    to_delete.append(message)',
        'elif outcome.action == "done":\n                    pass',
        (T_WORKER,),
    ),
    M(
        "worker: a defer's delay ignored",
        WORKER,
        "delay = min(outcome.delay, settings.retry_max_seconds)",
        "delay = settings.retry_max_seconds",
        (T_WORKER,),
    ),
    M(
        "worker: abandoned work not handed back",
        WORKER,
        'if outcome.action == "retry" and message.cancelled.is_set():',
        "if False:",
        (T_WORKER,),
    ),
    M(
        "worker: no visibility heartbeat",
        WORKER,
        "due = [m for m in messages if m.visible_until - now < self.queue.visibility_timeout / 2]",
        "due: list[Message] = []",
        (T_WORKER,),
    ),
    M(
        "worker: messages received after the stop not handed back",
        WORKER,
        "                    self.hand_back(messages)\n                    break",
        "                    break",
        (T_WORKER,),
    ),
    M(
        "worker: handlers never asked to give up",
        WORKER,
        "        if now >= cancel_at:",
        "        if False:",
        (T_WORKER,),
    ),
    M(
        "worker: a queue without DLQ accepted",
        SQS,
        "if not redrive_policy:",
        "if False:",
        (T_WORKER,),
    ),
    M(
        "worker: a handler bug kills the worker",
        WORKER,
        "except Exception as exc:  # a handler bug",
        "except ArithmeticError as exc:  # a handler bug",
        (T_WORKER,),
    ),
    M(
        "worker: a retry's delay grows with the receives",
        WORKER,
        "            delay = retry_delay(\n                retries,",
        "            delay = retry_delay(\n                message.receive_count,",
        (T_WORKER,),
    ),
    M(
        "worker: a copy does not count the handler's retry",
        WORKER,
        'retries = message.retries + (outcome.action == "retry")',
        "retries = message.retries",
        (T_WORKER,),
    ),
    M(
        "worker: the retries a copy carries are not read",
        SQS,
        "retries=0 if retries is None else int(retries),",
        "retries=0,",
        (T_WORKER,),
    ),
    M(
        "worker: no max_retries",
        WORKER,
        'if outcome.action == "retry" and message.retries >= self.settings.max_retries:',
        "if False:",
        (T_WORKER,),
    ),
    M(
        "worker: max_retries gives up one retry late",
        WORKER,
        "message.retries >= self.settings.max_retries",
        "message.retries > self.settings.max_retries",
        (T_WORKER,),
    ),
    M(
        "worker: a copy's own attributes not sent with it",
        WORKER,
        "attributes = {**own_attributes(message), RETRIES: number_attribute(retries)}",
        "attributes = {RETRIES: number_attribute(retries)}",
        (T_WORKER,),
    ),
    M(
        "worker: a delay past 15 min not carried by gas_not_before",
        WORKER,
        "if delay > SQS_MAX_DELAY:",
        "if False:",
        (T_WORKER,),
    ),
    M(
        "worker: a copy with no room for gas_retries sent without them",
        WORKER,
        "if len(attributes) > SQS_MAX_ATTRIBUTES:",
        "if False:",
        (T_WORKER,),
    ),
    M(
        "worker: the message received not deleted once its copy is sent",
        WORKER,
        "self.to_delete.append(message)  # should its delete fail: a duplicate",
        "pass",
        (T_WORKER,),
    ),
    M(
        "worker: a copy that cannot be sent left for the visibility timeout",
        WORKER,
        "        self.queue.change_visibility([message], hidden)\n",
        "\n",
        (T_WORKER,),
    ),
    M(
        "worker: a copy received before it is due is handled",
        WORKER,
        "if early > 0",
        "if False",
        (T_WORKER,),
    ),
    M(
        "worker: a forged gas_not_before believed",
        WORKER,
        "due = min(message.not_before, message.sent_at + self.settings.retry_max_seconds)",
        "due = message.not_before",
        (T_WORKER,),
    ),
    M(
        "worker: a garbled copy number believed",
        MESSAGES,
        "if not math.isfinite(number) or number < 0 or (name == RETRIES and not number.is_integer()):",
        "if False:",
        (T_WORKER,),
    ),
    M(
        "worker: dead letters keep the copy numbers",
        WORKER,
        "attributes = dict(list(own_attributes(message).items())[:6])",
        "attributes = dict(list(message.attributes.items())[:6])",
        (T_WORKER,),
    ),
    M(
        "worker: a re-sent copy taken for a first delivery",
        MESSAGES,
        "return self.receive_count > 1 or RETRIES in self.attributes",
        "return self.receive_count > 1",
        (T_WORKER, T_S3),
    ),
    # -- transfer checks -------------------------------------------------------------------------
    M(
        "glacier: no per-range tree hash check",
        GLACIER,
        "if sent is not None and sent != tree_hash:",
        "if False:",
        (T_THAW,),
    ),
    M(
        "glacier: no short-range check",
        GLACIER,
        "if got != len(body):",
        "if False:",
        (T_THAW,),
    ),
    M(
        "glacier: no whole-archive tree hash check",
        GLACIER,
        "if whole != self.tree_hash:",
        "if False:",
        (T_THAW,),
    ),
    M(
        "glacier: no short-read check of the source",
        GLACIER,
        "if len(body) != end - start + 1:",
        "if False:",
        (T_ARCHIVE,),
    ),
    M(
        "glacier: a failed upload is not aborted",
        GLACIER,
        "            self.abort(upload_id)  # no part is under way any more (in_parts)\n",
        "",
        (T_ARCHIVE,),
    ),
    M(
        "glacier: an upload not cancelled",
        GLACIER,
        "            if cancelled is not None and cancelled.is_set():\n                raise UploadCancelled(",
        "            if False:\n                raise UploadCancelled(",
        (T_ARCHIVE,),
    ),
    M(
        "glacier: a retrieval copy not cancelled",
        GLACIER,
        "if self.cancelled is not None and self.cancelled.is_set():",
        "if False:",
        (T_THAW,),
    ),
    M(
        "glacier: part size never enlarged",
        GLACIER,
        "while part * MAX_PARTS < size and part < MAX_PART_SIZE:",
        "while False:",
        (T_ARCHIVE,),
    ),
    M(
        "glacier: a lost InitiateJob answer not looked up",
        GLACIER,
        "found = self.find_job(archive_id, description) if _outcome_unknown(exc) else None",
        "found = None",
        (T_RESTORE,),
    ),
    M(
        "glacier: an InitiateJob sent again unchecked",
        GLACIER,
        "        if description not in self._sent:",
        "        if True:",
        ("tests/integration/test_lost_answers.py",),
    ),
    M(
        "glacier: an archive already gone fails its delete",
        GLACIER,
        '            if exc.response["Error"]["Code"] != "ResourceNotFoundException":\n'
        "                raise",
        "            raise",
        (T_THAW,),
    ),
    M(
        "backends: archive reads not pinned to the ETag",
        VAULT,
        "                IfMatch=source.etag,\n",
        "\n",
        (T_ARCHIVE,),
    ),
    M(
        "archive: a vault upload is committed without being recorded first",
        ARCHIVE,
        "                self.save_upload(job, source, upload.record)\n",
        "                pass\n",
        (T_ARCHIVE,),
    ),
    M(
        "backends: a notice naming no job accepted",
        VAULT,
        "if not isinstance(job_id, str) or not job_id:",
        "if False:",
        (T_THAW,),
    ),
    M(
        "backends: thaw's copy may keep the original's ETag",
        VAULT,
        "part_size = distinct_layout(size, avoid_etag, self.thaw_part_size)",
        "part_size = self.thaw_part_size",
        (T_THAW,),
    ),
    M(
        "backends: a failed thaw copy is not aborted",
        VAULT,
        "                self.s3.abort_multipart_upload(**where)\n",
        "                pass\n",
        (T_THAW, T_TRANSFERS),
    ),
    M(
        "backends: a thaw copy completed before it is verified whole",
        VAULT,
        "            output.verify()\n            self.s3.complete_multipart_upload(",
        "            self.s3.complete_multipart_upload(",
        (T_THAW,),
    ),
    M(
        "backends: S3 archive's copy in parts not pinned to the ETag",
        S3_BACKEND,
        # no ETag given: s3transfer looks the source up itself, and pins its parts to that
        "            source.etag,  # s3transfer pins every part to it\n",
        "            None,\n",
        (T_S3,),
    ),
    M(
        "backends: S3 restore 409 not taken as started",
        S3_BACKEND,
        '            if code != "RestoreAlreadyInProgress":\n                raise',
        "            raise",
        (T_S3, T_RESTORE),
    ),
    M(
        "backends: S3 restored already is not announced",
        S3_BACKEND,
        "if status == 200:",
        "if False:",
        (T_S3,),
    ),
    M(
        "backends: S3 event outside the archive accepted",
        S3_BACKEND,
        'if bucket != self.bucket or not key.startswith(self.prefix) or "/" not in key:',
        "if False:",
        (T_S3,),
    ),
    M(
        "backends: S3 restore in progress read as failed",
        S3_BACKEND,
        "if 'ongoing-request=\"true\"' in restore:",
        "if False:",
        (T_S3,),
    ),
    M(
        "backends: S3 object never restored read as succeeded",
        S3_BACKEND,
        "if 'ongoing-request=\"false\"' not in restore:",
        "if False:",
        (T_S3,),
    ),
    M(
        "backends: S3 copy back of an archive made before checksums keeps the original's ETag",
        S3_BACKEND,
        "if part_size == 0 and avoid_etag in (None, expected):",
        "if False:",
        (T_S3,),
    ),
    M(
        "backends: S3 copy back of an archive made before checksums not verified",
        S3_BACKEND,
        'if copied.get("ETag") != expected:',
        "if False:",
        (T_S3,),
    ),
    M(
        "backends: S3 copy back's checksum not compared",
        S3_BACKEND,
        'if copied.get(f"Checksum{CHECKSUM}") != expected:',
        "if False:",
        (T_S3,),
    ),
    M(
        "backends: S3 copy back of a one-request original made in one request",
        S3_BACKEND,
        "part_size = MAX_SINGLE_COPY if in_one_request else 0",
        "part_size = 0",
        (T_S3,),
    ),
    M(
        "backends: S3 archive copied without a checksum of its own",
        S3_BACKEND,
        "                ChecksumAlgorithm=CHECKSUM,\n",
        "",
        (T_S3,),
    ),
    M(
        "aws: a refusal for capacity retried by botocore",
        AWS,
        "        if code in codes:",
        "        if False:",
        (T_RESTORE, T_S3),
    ),
    M(
        "backends: S3 copy not cancelled",
        S3_BACKEND,
        "            if cancelled.is_set():\n                future.cancel()",
        "            if False:\n                future.cancel()",
        (T_S3,),
    ),
    M(
        "backends: DEEP_ARCHIVE asked for Expedited",
        S3_BACKEND,
        'if head.get("StorageClass") == "DEEP_ARCHIVE":',
        "if False:",
        (T_S3,),
    ),
    # -- reconcile -------------------------------------------------------------------------
    M(
        "reconcile: an archive thawed since the listing taken for an orphan",
        RECONCILE,
        "        if item.get(THAW_TIME, 0) + 1 + self.settings.slack_seconds > taken:\n",
        "        if False:\n",
        (T_RECONCILE,),
    ),
    M(
        "reconcile: an archive thaw recorded but had not deleted by the listing an orphan",
        RECONCILE,
        "        if item.get(THAW_TIME, 0) + 1 + self.settings.slack_seconds > taken:\n",
        "        if item.get(THAW_TIME, 0) + 1 > taken:\n",
        (T_RECONCILE,),
    ),
    M(
        "reconcile: an orphan's age counted to the pass, not to the listing",
        RECONCILE,
        "oldest = taken - self.settings.orphan_age_seconds",
        "oldest = self.now - self.settings.orphan_age_seconds",
        (T_RECONCILE,),
    ),
    M(
        "reconcile: an orphan an earlier pass deleted found again",
        RECONCILE,
        "if archive_id in self.named or archive_id in gone or archive[1] > oldest:",
        "if archive_id in self.named or archive[1] > oldest:",
        (T_RECONCILE,),
    ),
    M(
        "reconcile: the restore message a pass sent not waited for",
        REPAIRS,
        "        wait = previous\n",
        "        wait = None\n",
        (T_RECONCILE,),
    ),
    M(
        "reconcile: restore messages queued not waited for",
        REPAIRS,
        "if wait is None and self.restores_queued:",
        "if False:",
        (T_RECONCILE,),
    ),
    M(
        "reconcile: a restore message waited for past its grace",
        REPAIRS,
        'if wait is not None and self.now < wait["since"] + self.settings.restore_grace_seconds:',
        "if wait is not None:",
        (T_RECONCILE,),
    ),
    M(
        "reconcile: a restore message not sent is waited for",
        REPAIRS,
        '            if first.action.startswith("done"):\n                report.restores',
        "            if True:\n                report.restores",
        (T_RECONCILE,),
    ),
    M(
        "reconcile: a finding waiting for its restore message left",
        RECONCILE_REPORT,
        'if any(not f.action.startswith(("done", "waits")) for f in self.findings):',
        'if any(not f.action.startswith("done") for f in self.findings):',
        (T_RECONCILE,),
    ),
    # -- the operator's surface: a wrong setting stops a worker for good, logs stay bounded --
    M(
        "sqs: a queue that does not exist is not a configuration error",
        SQS,
        "except self.sqs.exceptions.QueueDoesNotExist:\n            region",
        "except ZeroDivisionError:\n            region",
        (T_WORKER,),
    ),
    M(
        "sqs: a dead-letter queue that does not exist is not a configuration error",
        SQS,
        "except self.sqs.exceptions.QueueDoesNotExist:\n            message",
        "except ZeroDivisionError:\n            message",
        (T_WORKER,),
    ),
    M(
        "config: a file with a byte order mark not read",
        UTIL_CONFIG,
        'data.decode("utf-8-sig")',
        'data.decode("utf-8")',
        (T_CONFIG,),
    ),
    M(
        "worker: --once waits the full long poll",
        WORKER,
        "wait = min(wait, ONCE_WAIT_SECONDS)",
        "wait = wait",
        (T_START,),
    ),
    M(
        "process: a long value not cut in the logs",
        PROCESS,
        "line if len(line) <= limit else",
        "line if True else",
        (T_LOGGING,),
    ),
]

# Mutants that survive because they change nothing a test can observe, and why.
EQUIVALENT: dict[str, str] = {
    "notify: a released claim reads as a live one": "unreachable: a claim fails against the item as it was at that moment (DynamoDB "
    "checks the condition atomically), which then holds the notified time or a live "
    "claim expiry; the branch is defensive",
    "glacier: an archive already gone fails its delete": "unreachable on the local Glacier, as "
    "on AWS: DeleteArchive of a deleted archive succeeds (the Glacier API reference: 'This "
    "operation is idempotent'); ResourceNotFoundException comes only for an id the vault never "
    "had, which no utility deletes. The guard stays for a deletion AWS answers otherwise",
}


@dataclass
class Result:
    mutant: Mutant
    status: str  # killed | survived | does not apply
    detail: str = ""
    seconds: float = 0.0


def copy_tree(destination: Path) -> None:
    shutil.copytree(
        ROOT,
        destination,
        symlinks=True,
        ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", "*.pyc"),
    )
    (destination / ".venv").symlink_to((ROOT / ".venv").resolve())


def pytest_command(tests: tuple[str, ...]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-n",
        "0",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        *tests,
    ]


def run_mutant(tree: Path, mutant: Mutant) -> Result:
    path = tree / mutant.file
    original = path.read_text()
    found = original.count(mutant.original)
    if found != 1:
        return Result(
            mutant,
            "does not apply",
            f"snippet found {found} times in {mutant.file}: {mutant.original!r}",
        )
    path.write_text(original.replace(mutant.original, mutant.replacement))
    started = time.monotonic()
    try:
        process = subprocess.run(
            pytest_command(mutant.tests),
            cwd=tree,
            capture_output=True,
            text=True,
            timeout=MUTANT_TIMEOUT,
        )
        lines = process.stdout.strip().splitlines()
        failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
        detail = (failed or lines[-1:] or [""])[0]
        # Survived only if pytest ran to its summary: a mutant can end the process early with
        # exit status 0 (os._exit in the worker's drain), which is no pass.
        finished = bool(lines) and re.fullmatch(r"=* ?\d+ passed.*", lines[-1]) is not None
        status = "survived" if process.returncode == 0 and finished else "killed"
        if status == "killed" and not failed and process.returncode == 0:
            detail = f"pytest ended before its summary: {detail}"
    except subprocess.TimeoutExpired:
        status, detail = "killed", f"tests still running after {MUTANT_TIMEOUT}s"
    finally:
        path.write_text(original)
    return Result(mutant, status, detail, time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.mutate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "-k",
        dest="patterns",
        action="append",
        default=[],
        help="only the mutants whose name contains this (repeatable: any)",
    )
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if not args.patterns or any(p in m.name for p in args.patterns)]
    if args.list:
        stale = 0
        for mutant in mutants:
            found = (ROOT / mutant.file).read_text().count(mutant.original)
            stale += found != 1
            note = "" if found == 1 else f"  DOES NOT APPLY (snippet found {found} times)"
            print(f"{mutant.name}  [{mutant.file}; {' '.join(mutant.tests)}]{note}")
        return 1 if stale else 0
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="gas-mutate-") as directory:
        tree = Path(directory) / "tree"
        copy_tree(tree)
        baseline = sorted({t for m in mutants for t in m.tests})
        print(f"baseline: {' '.join(baseline)}", flush=True)
        check = subprocess.run(
            pytest_command(tuple(baseline)), cwd=tree, capture_output=True, text=True
        )
        if check.returncode != 0:
            print(check.stdout[-3000:], file=sys.stderr)
            print("the unmutated tests fail: fix them first", file=sys.stderr)
            return 2
        for number, mutant in enumerate(mutants, 1):
            result = run_mutant(tree, mutant)
            results.append(result)
            print(
                f"[{number}/{len(mutants)}] {result.status.upper():14} {mutant.name} "
                f"({result.seconds:.0f}s) {result.detail}",
                flush=True,
            )
    return report(results)


def report(results: list[Result]) -> int:
    missing = [r for r in results if r.status == "does not apply"]
    counted = [
        r for r in results if r.status != "does not apply" and r.mutant.name not in EQUIVALENT
    ]
    killed = [r for r in counted if r.status == "killed"]
    survived = [r for r in counted if r.status == "survived"]
    equivalent = [r for r in results if r.mutant.name in EQUIVALENT and r not in missing]
    print()
    for result in survived:
        print(f"SURVIVED: {result.mutant.name} ({result.mutant.file})")
    for result in equivalent:
        print(
            f"equivalent ({result.status}): {result.mutant.name}: {EQUIVALENT[result.mutant.name]}"
        )
    for result in missing:
        print(f"DOES NOT APPLY: {result.mutant.name}: {result.detail}", file=sys.stderr)
    score = len(killed) / len(counted) if counted else 0.0
    print(
        f"mutation score: {len(killed)}/{len(counted)} killed ({score:.0%}); "
        f"{len(equivalent)} equivalent; {len(missing)} do not apply"
    )
    if missing:
        print(
            f"{len(missing)} mutant(s) no longer apply: update their snippets in tests/mutate.py",
            file=sys.stderr,
        )
        return 1
    return 0 if score >= TARGET_SCORE else 1


if __name__ == "__main__":
    sys.exit(main())
