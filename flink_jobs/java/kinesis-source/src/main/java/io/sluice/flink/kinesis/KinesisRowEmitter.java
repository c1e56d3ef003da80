package io.sluice.flink.kinesis;

import org.apache.flink.api.connector.source.SourceOutput;
import org.apache.flink.connector.base.source.reader.RecordEmitter;
import org.apache.flink.types.Row;

/** One Row per Kinesis record, timestamped with its arrival; the split's position moves past it. */
final class KinesisRowEmitter implements RecordEmitter<KinesisRecord, Row, KinesisShardSplitState> {
    @Override
    public void emitRecord(
            KinesisRecord record, SourceOutput<Row> output, KinesisShardSplitState state) {
        output.collect(
                Row.of(record.shardId, record.sequenceNumber, record.arrivalMillis, record.data),
                record.arrivalMillis);
        state.lastSequenceNumber = record.sequenceNumber;
    }
}
