package io.sluice.flink.kinesis;

/** A split being read: the split plus the sequence number of the last record emitted. */
final class KinesisShardSplitState {
    final KinesisShardSplit split;
    String lastSequenceNumber;

    KinesisShardSplitState(KinesisShardSplit split) {
        this.split = split;
        this.lastSequenceNumber = split.lastSequenceNumber;
    }

    KinesisShardSplit toSplit() {
        return split.after(lastSequenceNumber);
    }
}
