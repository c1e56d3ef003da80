package io.sluice.flink.kinesis;

import java.util.ArrayList;
import java.util.List;
import software.amazon.awssdk.services.kinesis.KinesisClient;
import software.amazon.awssdk.services.kinesis.model.ListShardsRequest;
import software.amazon.awssdk.services.kinesis.model.ListShardsResponse;
import software.amazon.awssdk.services.kinesis.model.Shard;

/** ListShards, every page. */
final class ShardLister {
    private ShardLister() {}

    static List<ShardInfo> list(KinesisClient client, String streamName) {
        List<ShardInfo> shards = new ArrayList<>();
        String token = null;
        do {
            ListShardsRequest request =
                    token == null
                            ? ListShardsRequest.builder().streamName(streamName).build()
                            : ListShardsRequest.builder().nextToken(token).build();
            ListShardsResponse response = client.listShards(request);
            for (Shard shard : response.shards()) {
                List<String> parents = new ArrayList<>(2);
                if (shard.parentShardId() != null) {
                    parents.add(shard.parentShardId());
                }
                if (shard.adjacentParentShardId() != null) {
                    parents.add(shard.adjacentParentShardId());
                }
                boolean closed =
                        shard.sequenceNumberRange() != null
                                && shard.sequenceNumberRange().endingSequenceNumber() != null;
                shards.add(new ShardInfo(shard.shardId(), parents, closed));
            }
            token = response.nextToken();
        } while (token != null);
        return shards;
    }
}
