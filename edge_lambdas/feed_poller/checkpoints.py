"""DynamoDB implementation of ``sluice.edges.polling.CheckpointStore``: one item per feed.

Table: partition key ``feed`` (string), no sort key, on-demand capacity. Item attributes:

- ``feed`` (S): the feed name;
- ``version`` (N): bumped by every checkpoint write; a write is conditional on the version read;
- ``lease_owner`` (S) and ``lease_expires`` (N, epoch seconds): present while a poll holds the lease;
- ``source_url``, ``etag``, ``last_modified`` (S): validators of the last complete poll;
- ``seen_state`` (B): zlib-compressed JSON of the (item id, updated time) pairs and dead-letter ids
  seen, with their last-seen times (``encode_seen_state``, bounded by ``bound_checkpoint``, both in
  ``sluice.edges.polling.checkpoints``), so the whole item stays under DynamoDB's 400 KB limit;
- ``committed_at`` (N): epoch seconds of the last checkpoint write.

Each method is a single ``UpdateItem`` with a condition expression, so it is atomic: taking the lease
(and reading the checkpoint, via ``ReturnValues=ALL_NEW``) costs one write, the checkpoint write also
releases the lease.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from sluice.core.aws_errors import aws_error_code
from sluice.edges.polling import (
    Checkpoint,
    CheckpointStore,
    LeaseLost,
    decode_seen_state,
    encode_seen_state,
)

__all__ = ["DynamoDbCheckpointStore", "create_checkpoint_table"]

_CONDITION_FAILED = "ConditionalCheckFailedException"


def _number(value: float) -> str:
    # DynamoDB numbers travel as strings; Decimal keeps the float exact enough and never uses "e".
    return format(Decimal(repr(value)), "f")


class DynamoDbCheckpointStore(CheckpointStore):
    """Checkpoints and leases in a DynamoDB table, through a low-level boto3 client."""

    def __init__(self, table_name: str, client: Any) -> None:
        self.table_name = table_name
        self.client = client

    def acquire(self, feed: str, owner: str, now: float, lease_seconds: float) -> Checkpoint | None:
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key={"feed": {"S": feed}},
                UpdateExpression=(
                    "SET lease_owner = :owner, lease_expires = :expires, "
                    "version = if_not_exists(version, :zero)"
                ),
                ConditionExpression="attribute_not_exists(lease_owner) OR lease_expires <= :now",
                ExpressionAttributeValues={
                    ":owner": {"S": owner},
                    ":expires": {"N": _number(now + lease_seconds)},
                    ":now": {"N": _number(now)},
                    ":zero": {"N": "0"},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as err:
            if aws_error_code(err) == _CONDITION_FAILED:
                return None
            raise
        return self._checkpoint(feed, response["Attributes"])

    def commit(self, checkpoint: Checkpoint, owner: str, expected_version: int) -> None:
        values: dict[str, Any] = {
            ":owner": {"S": owner},
            ":expected": {"N": str(expected_version)},
            ":version": {"N": str(checkpoint.version)},
            ":state": {"B": encode_seen_state(checkpoint)},
        }
        sets = ["version = :version", "seen_state = :state"]
        removes = ["lease_owner", "lease_expires"]
        optional = {
            "source_url": checkpoint.source_url,
            "etag": checkpoint.etag,
            "last_modified": checkpoint.last_modified,
            "committed_at": None
            if checkpoint.committed_at is None
            else _number(checkpoint.committed_at),
        }
        for name, value in optional.items():
            if value is None:
                removes.append(name)
            else:
                values[f":{name}"] = {"N" if name == "committed_at" else "S": value}
                sets.append(f"{name} = :{name}")
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"feed": {"S": checkpoint.feed}},
                UpdateExpression=f"SET {', '.join(sets)} REMOVE {', '.join(removes)}",
                ConditionExpression="lease_owner = :owner AND version = :expected",
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if aws_error_code(err) != _CONDITION_FAILED:
                raise
            old = err.response.get("Item") or {}
            raise LeaseLost(
                f"feed {checkpoint.feed!r}: checkpoint not written, lease held by "
                f"{old.get('lease_owner', {}).get('S')!r} at version "
                f"{old.get('version', {}).get('N')} (we are {owner!r}, read version "
                f"{expected_version}); the emitted items may be emitted again, with the same ids"
            ) from None

    def release(self, feed: str, owner: str) -> None:
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"feed": {"S": feed}},
                UpdateExpression="REMOVE lease_owner, lease_expires",
                ConditionExpression="lease_owner = :owner",
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except ClientError as err:
            if aws_error_code(err) != _CONDITION_FAILED:
                raise  # a condition failure means someone else holds it now: nothing to give back

    @staticmethod
    def _checkpoint(feed: str, item: dict[str, Any]) -> Checkpoint:
        def text(name: str) -> str | None:
            value = item.get(name)
            return None if value is None else str(value["S"])

        blob = item.get("seen_state", {}).get("B")
        seen, dead = decode_seen_state(bytes(blob) if blob is not None else None)
        committed = item.get("committed_at")
        return Checkpoint(
            feed=feed,
            version=int(item.get("version", {}).get("N", "0")),
            source_url=text("source_url"),
            etag=text("etag"),
            last_modified=text("last_modified"),
            seen=seen,
            dead_letters=dead,
            committed_at=None if committed is None else float(committed["N"]),
        )


def create_checkpoint_table(client: Any, table_name: str) -> None:
    """Create the table as deployed (for local runs and tests); waits until it is active."""
    client.create_table(
        TableName=table_name,
        KeySchema=[{"AttributeName": "feed", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "feed", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(
        TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
