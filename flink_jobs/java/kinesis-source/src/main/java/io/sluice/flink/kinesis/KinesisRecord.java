package io.sluice.flink.kinesis;

/** One Kinesis record as fetched (KPL aggregates are kept whole; Python de-aggregates them). */
final class KinesisRecord {
    final String shardId;
    final String sequenceNumber;
    final long arrivalMillis;
    final byte[] data;

    KinesisRecord(String shardId, String sequenceNumber, long arrivalMillis, byte[] data) {
        this.shardId = shardId;
        this.sequenceNumber = sequenceNumber;
        this.arrivalMillis = arrivalMillis;
        this.data = data;
    }
}
