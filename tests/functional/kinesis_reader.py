"""Read a whole Kinesis stream back, as a consumer would: every shard from the start, de-aggregated.

In: a boto3 Kinesis client and a stream name.
Out: ``StreamContents``: the Kinesis records, the user records (de-aggregated with ``sluice.stream.kpl``)
and the envelopes decoded from them (anything undecodable is kept as a dead letter, so a test sees it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sluice.core.contracts import DeadLetter, Envelope
from sluice.stream.envelopes import decode_envelopes
from sluice.stream.kpl import UserRecord, deaggregate


@dataclass
class StreamContents:
    kinesis_records: list[dict[str, Any]] = field(default_factory=list)
    user_records: list[UserRecord] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)
    undecodable: list[DeadLetter] = field(default_factory=list)

    @property
    def event_ids(self) -> Counter[str]:
        return Counter(envelope.event_id for envelope in self.envelopes)

    def records(self) -> list[Envelope]:
        return [e for e in self.envelopes if e.kind == "record"]

    def dead_letters(self) -> list[DeadLetter]:
        return [
            DeadLetter.model_validate(e.payload) for e in self.envelopes if e.kind == "dead_letter"
        ]


def read_stream(client: Any, stream_name: str) -> StreamContents:
    contents = StreamContents()
    shards = client.list_shards(StreamName=stream_name)["Shards"]
    for shard in shards:
        iterator = client.get_shard_iterator(
            StreamName=stream_name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            response = client.get_records(ShardIterator=iterator, Limit=10_000)
            if not response["Records"]:
                break
            contents.kinesis_records.extend(response["Records"])
            iterator = response.get("NextShardIterator")
    for record in contents.kinesis_records:
        contents.user_records.extend(deaggregate(record["Data"], record["PartitionKey"]))
    decoded = decode_envelopes(record.data for record in contents.user_records)
    contents.envelopes, contents.undecodable = decoded.valid, decoded.dead_letters
    return contents
