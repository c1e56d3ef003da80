package io.sluice.flink.kinesis;

import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * Which shards may be handed to a reader now: those neither assigned nor finished whose parents are
 * all finished. A parent ListShards no longer lists has left the stream's retention and counts as
 * finished. Holding a child back until its parents are read keeps each partition key's records in
 * order across a reshard.
 */
final class ShardGraph {
    private ShardGraph() {}

    static List<ShardInfo> ready(
            Collection<ShardInfo> listed, Set<String> finished, Set<String> assigned) {
        Map<String, ShardInfo> byId = new TreeMap<>();
        for (ShardInfo shard : listed) {
            byId.put(shard.shardId, shard);
        }
        List<ShardInfo> ready = new ArrayList<>();
        for (ShardInfo shard : byId.values()) {
            if (finished.contains(shard.shardId) || assigned.contains(shard.shardId)) {
                continue;
            }
            boolean parentsDone = true;
            for (String parent : shard.parentShardIds) {
                if (byId.containsKey(parent) && !finished.contains(parent)) {
                    parentsDone = false;
                    break;
                }
            }
            if (parentsDone) {
                ready.add(shard);
            }
        }
        return ready;
    }
}
