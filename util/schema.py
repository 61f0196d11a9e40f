"""The contracts every utility shares (docs/design.md): the annotations item's attribute
names, job states, user roles, the user index, and the job request the web app publishes.
They live here once: nothing else spells an attribute's name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Annotations item attributes (docs/design.md) and the ones the utilities add.
JOB_ID = "job_id"
USER_ID = "user_id"
JOB_STATUS = "job_status"
INPUT_FILE_NAME = "input_file_name"
INPUTS_BUCKET = "s3_inputs_bucket"
INPUT_KEY = "s3_key_input_file"
SUBMIT_TIME = "submit_time"
COMPLETE_TIME = "complete_time"
RESULTS_BUCKET = "s3_results_bucket"
RESULT_KEY = "s3_key_result_file"
LOG_KEY = "s3_key_log_file"
ARCHIVE_ID = "results_file_archive_id"
# The ETag of the S3 result the archive holds, recorded with ARCHIVE_ID: archive deletes the S3
# copy only while it still has this ETag, so a copy thaw put back is never deleted
# (util/archive/archive.py).
RESULT_ETAG = "results_file_etag"
# A vault upload whose parts are all in, recorded before it is completed so that a worker that
# dies between completing and recording it leaves no orphan archive (util/backends.py).
ARCHIVE_UPLOAD = "results_file_archive_upload"
# A result's way back from Glacier (util/retrieval.py): the retrieval under way, and the one
# that brought it back.
RESTORE_JOB_ID = "restore_job_id"
RESTORE_TIER = "restore_tier"
RESTORE_TIME = "restore_time"
RESTORE_EXPIRES = "restore_expires"
THAW_JOB_ID = "thaw_job_id"
THAW_TIME = "thaw_time"
# When the user was e-mailed about the finished job (util/notify): set once, after the send.
NOTIFIED_TIME = "notified_time"
NOTIFY_CLAIM = "notify_claim"  # the token of the message copy that sends (and sent) the e-mail
NOTIFY_CLAIM_EXPIRES = "notify_claim_expires"
# True on a job util/ann_load.py submitted, so its --cleanup removes those and nothing else.
SYNTHETIC = "synthetic"

# The job request the web app publishes on the job-requests topic for the annotator fleet:
# these fields of the new PENDING item, as one JSON object.
JOB_REQUEST_FIELDS = (
    JOB_ID,
    USER_ID,
    INPUT_FILE_NAME,
    INPUTS_BUCKET,
    INPUT_KEY,
    SUBMIT_TIME,
    JOB_STATUS,
)

# The users table (the web app's): key user_id, and who the user is.
USER_NAME, USER_EMAIL, USER_ROLE = "name", "email", "role"
USER_INDEX = "user_id_index"  # GSI of the annotations table: user_id, submit_time

PENDING = "PENDING"
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
PREMIUM = "premium_user"
FREE = "free_user"


def job_request(item: Mapping[str, Any]) -> dict[str, Any]:
    """The job-requests topic message for a new job: JOB_REQUEST_FIELDS of its item."""
    return {field: item[field] for field in JOB_REQUEST_FIELDS}
