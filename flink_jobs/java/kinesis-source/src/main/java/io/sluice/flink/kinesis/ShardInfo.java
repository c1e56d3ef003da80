package io.sluice.flink.kinesis;

import java.util.List;

/** What ListShards says about one shard: its parents (split: one, merge: two), closed or not. */
final class ShardInfo {
    final String shardId;
    final List<String> parentShardIds;
    final boolean closed;

    ShardInfo(String shardId, List<String> parentShardIds, boolean closed) {
        this.shardId = shardId;
        this.parentShardIds = List.copyOf(parentShardIds);
        this.closed = closed;
    }
}
