package io.sluice.flink.kinesis;

import java.util.List;
import java.util.Objects;
import org.apache.flink.api.connector.source.SourceSplit;

/**
 * One shard. {@code lastSequenceNumber} is the last record emitted (null: none yet, start at
 * {@code startPosition}); a {@code finishedMarker} split carries no reading work, only the fact
 * that this reader read the (closed) shard to its end, kept in the reader's checkpoint until the
 * enumerator's own checkpoint is known to hold it.
 */
public final class KinesisShardSplit implements SourceSplit {
    final String shardId;
    final List<String> parentShardIds;
    final StartPosition startPosition;
    final long startTimestampMillis;
    final String lastSequenceNumber;
    final boolean finishedMarker;

    KinesisShardSplit(
            String shardId,
            List<String> parentShardIds,
            StartPosition startPosition,
            long startTimestampMillis,
            String lastSequenceNumber,
            boolean finishedMarker) {
        this.shardId = Objects.requireNonNull(shardId);
        this.parentShardIds = List.copyOf(parentShardIds);
        this.startPosition = Objects.requireNonNull(startPosition);
        this.startTimestampMillis = startTimestampMillis;
        this.lastSequenceNumber = lastSequenceNumber;
        this.finishedMarker = finishedMarker;
    }

    @Override
    public String splitId() {
        return shardId;
    }

    KinesisShardSplit after(String sequenceNumber) {
        return new KinesisShardSplit(shardId, parentShardIds, startPosition, startTimestampMillis,
                sequenceNumber, false);
    }

    KinesisShardSplit asFinishedMarker() {
        return new KinesisShardSplit(shardId, parentShardIds, startPosition, startTimestampMillis,
                lastSequenceNumber, true);
    }

    @Override
    public boolean equals(Object other) {
        if (!(other instanceof KinesisShardSplit)) {
            return false;
        }
        KinesisShardSplit that = (KinesisShardSplit) other;
        return shardId.equals(that.shardId)
                && parentShardIds.equals(that.parentShardIds)
                && startPosition == that.startPosition
                && startTimestampMillis == that.startTimestampMillis
                && Objects.equals(lastSequenceNumber, that.lastSequenceNumber)
                && finishedMarker == that.finishedMarker;
    }

    @Override
    public int hashCode() {
        return Objects.hash(shardId, lastSequenceNumber, finishedMarker);
    }

    @Override
    public String toString() {
        return "KinesisShardSplit{" + shardId + ", parents=" + parentShardIds + ", after="
                + lastSequenceNumber + (finishedMarker ? ", finished" : "") + "}";
    }
}
