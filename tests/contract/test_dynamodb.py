"""DynamoDB: conditional writes, transactions, their atomicity, the index's consistency."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from tests.conftest import wait_for
from tests.contract.account import Account, error_code, local_only, unique


def put_job(account: Account, **attributes: str) -> str:
    job_id = unique("job")
    item = {"job_id": {"S": job_id}, **{k: {"S": v} for k, v in attributes.items()}}
    account.client("dynamodb").put_item(TableName=account.config.gas.annotations_table, Item=item)
    return job_id


def test_a_failed_condition_answers_the_item_as_it_is(account: Account) -> None:
    # Given a job another worker has archived
    table = account.config.gas.annotations_table
    job_id = put_job(account, results_file_archive_id="theirs")
    # When a write conditional on no archive asks for the item on failure
    with pytest.raises(ClientError) as failed:
        account.client("dynamodb").update_item(
            TableName=table,
            Key={"job_id": {"S": job_id}},
            UpdateExpression="SET results_file_archive_id = :mine",
            ConditionExpression="attribute_not_exists(results_file_archive_id)",
            ExpressionAttributeValues={":mine": {"S": "mine"}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    # Then it fails its condition and the error carries the item, unchanged
    assert error_code(failed.value) == "ConditionalCheckFailedException"
    assert failed.value.response["Item"]["results_file_archive_id"] == {"S": "theirs"}
    item = account.client("dynamodb").get_item(
        TableName=table, Key={"job_id": {"S": job_id}}, ConsistentRead=True
    )["Item"]
    assert item["results_file_archive_id"] == {"S": "theirs"}


def test_a_transaction_whose_condition_check_fails_writes_nothing_and_names_the_item(
    account: Account,
) -> None:
    # Given a job and its user, who upgraded to premium
    gas = account.config.gas
    job_id = put_job(account)
    user_id = unique("user")
    account.client("dynamodb").put_item(
        TableName=gas.users_table,
        Item={"user_id": {"S": user_id}, "role": {"S": "premium_user"}},
    )
    # When archive records its archive on the job, checking in the same transaction that the
    # user is still free
    with pytest.raises(ClientError) as cancelled:
        account.client("dynamodb").transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": gas.annotations_table,
                        "Key": {"job_id": {"S": job_id}},
                        "UpdateExpression": "SET results_file_archive_id = :a",
                        "ConditionExpression": "attribute_not_exists(results_file_archive_id)",
                        "ExpressionAttributeValues": {":a": {"S": "archive"}},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
                {
                    "ConditionCheck": {
                        "TableName": gas.users_table,
                        "Key": {"user_id": {"S": user_id}},
                        "ConditionExpression": "#role = :free",
                        "ExpressionAttributeNames": {"#role": "role"},
                        "ExpressionAttributeValues": {":free": {"S": "free_user"}},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
            ]
        )
    # Then the whole transaction is cancelled, with one reason per item in order: none for the
    # update, the failed check with the user as it is
    assert error_code(cancelled.value) == "TransactionCanceledException"
    reasons = cancelled.value.response["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", "ConditionalCheckFailed"]
    assert reasons[1]["Item"]["role"] == {"S": "premium_user"}
    # And the job was not written
    item = account.client("dynamodb").get_item(
        TableName=gas.annotations_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True
    )["Item"]
    assert "results_file_archive_id" not in item


def test_racing_conditional_writes_to_one_item_have_exactly_one_winner(account: Account) -> None:
    # Given one job and 16 workers ready to claim it at the same moment
    table = account.config.gas.annotations_table
    job_id = put_job(account)
    workers = 16
    start = threading.Barrier(workers)
    dynamodb = account.client("dynamodb")

    def claim(worker: int) -> bool:
        start.wait()
        try:
            dynamodb.update_item(
                TableName=table,
                Key={"job_id": {"S": job_id}},
                UpdateExpression="SET restore_job_id = :me",
                ConditionExpression="attribute_not_exists(restore_job_id)",
                ExpressionAttributeValues={":me": {"S": f"claim:{worker}"}},
            )
            return True
        except ClientError as exc:
            assert error_code(exc) == "ConditionalCheckFailedException"
            return False

    # When they all claim it on condition that nobody has
    with ThreadPoolExecutor(workers) as pool:
        won = list(pool.map(claim, range(workers)))
    # Then exactly one claim succeeded, and the item holds that one
    assert won.count(True) == 1
    item = dynamodb.get_item(TableName=table, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
    assert item["Item"]["restore_job_id"] == {"S": f"claim:{won.index(True)}"}


def test_a_global_secondary_index_refuses_strongly_consistent_reads(account: Account) -> None:
    # When restore's query of the user_id_index asks for a strongly consistent read
    with pytest.raises(ClientError) as refused:
        account.client("dynamodb").query(
            TableName=account.config.gas.annotations_table,
            IndexName="user_id_index",
            KeyConditionExpression="user_id = :u",
            ExpressionAttributeValues={":u": {"S": unique("user")}},
            ConsistentRead=True,
        )
    # Then DynamoDB refuses it: every read of a GSI is eventually consistent
    assert error_code(refused.value) == "ValidationException"


@local_only("AWS's index lag is real but unpredictable; [local] index_lag_seconds makes it 2 s")
def test_a_global_secondary_index_read_may_miss_a_recent_write(fast: Account) -> None:
    # Given a job just put in the table
    gas = fast.config.gas
    dynamodb = fast.client("dynamodb")
    user_id, job_id = unique("user"), unique("job")
    dynamodb.put_item(
        TableName=gas.annotations_table,
        Item={
            "job_id": {"S": job_id},
            "user_id": {"S": user_id},
            "submit_time": {"N": str(int(time.time()))},
        },
    )

    def indexed() -> list[dict]:
        return dynamodb.query(
            TableName=gas.annotations_table,
            IndexName="user_id_index",
            KeyConditionExpression="user_id = :u",
            ExpressionAttributeValues={":u": {"S": user_id}},
        )["Items"]

    # When the index is read at once
    # Then it does not have the job yet, though the table does
    assert indexed() == []
    assert "Item" in dynamodb.get_item(
        TableName=gas.annotations_table, Key={"job_id": {"S": job_id}}
    )
    # And a little later it does
    [item] = wait_for(indexed, timeout=20, what="the index to catch up")
    assert item["job_id"] == {"S": job_id}
