package io.sluice.flink.kinesis;

import java.util.List;
import org.apache.flink.api.connector.source.SourceEvent;

/** The events between readers and the enumerator. */
final class ShardEvents {
    private ShardEvents() {}

    /** Reader to enumerator: these shards were read to their end (closed and drained). */
    static final class ShardsFinished implements SourceEvent {
        private static final long serialVersionUID = 1L;
        final List<String> shardIds;

        ShardsFinished(List<String> shardIds) {
            this.shardIds = List.copyOf(shardIds);
        }
    }

    /** Enumerator to reader: the enumerator holds these shards as finished (in its next checkpoint). */
    static final class ShardsFinishedAck implements SourceEvent {
        private static final long serialVersionUID = 1L;
        final List<String> shardIds;

        ShardsFinishedAck(List<String> shardIds) {
            this.shardIds = List.copyOf(shardIds);
        }
    }
}
