"""Handlers in this process against the local stack server, an answer lost on the way back.

In process, moto carries out every request whatever a botocore handler answers first
(MOTO-NOTES), so what a handler does *instead of* sending again is seen only against a server.
"""

from __future__ import annotations

from tests.conftest import LostAnswers, Server, job, message, put_job, set_role
from util.archive.archive import Archiver
from util.restore.restore import Restorer
from util.schema import RESTORE_JOB_ID


def test_initiate_job_sent_again_after_a_lost_answer_starts_no_second_retrieval(
    server: Server, lost_answers: LostAnswers
) -> None:
    # Given an archived result whose user upgraded
    put_job(server)
    assert (
        Archiver(server.config, server.aws)(message(job_id="j1", user_id="u-alice")).reason
        == "archived"
    )
    set_role(server, "u-alice", "premium_user")
    # When InitiateJob takes effect, its answer is lost, and botocore sends it again
    lost_answers.add("InitiateJob")
    outcome = Restorer(server.config, server.aws)(message(user_id="u-alice"))
    # Then the second send found the job the first one started: one retrieval, recorded
    assert lost_answers.hits == [("InitiateJob", "retry")]
    assert (outcome.action, outcome.reason) == ("done", "1 started Expedited")
    jobs = server.client("glacier").list_jobs(vaultName=server.config.gas.vault)["JobList"]
    assert [j["JobId"] for j in jobs] == [job(server)[RESTORE_JOB_ID]]
