package io.sluice.flink.kinesis;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.io.IOException;
import java.util.List;
import java.util.Set;
import java.util.stream.Collectors;
import org.apache.flink.api.connector.source.Boundedness;
import org.junit.jupiter.api.Test;

class KinesisSourceUnitTest {
    private static List<String> ids(List<ShardInfo> shards) {
        return shards.stream().map(s -> s.shardId).collect(Collectors.toList());
    }

    @Test
    void childrenWaitForEveryParent() {
        List<ShardInfo> listed = List.of(
                new ShardInfo("shardId-000000000000", List.of(), true),
                new ShardInfo("shardId-000000000001", List.of(), false),
                new ShardInfo("shardId-000000000002", List.of("shardId-000000000000"), false),
                new ShardInfo("shardId-000000000003",
                        List.of("shardId-000000000000", "shardId-000000000001"), false));
        assertEquals(List.of("shardId-000000000000", "shardId-000000000001"),
                ids(ShardGraph.ready(listed, Set.of(), Set.of())));
        assertEquals(List.of("shardId-000000000002"),
                ids(ShardGraph.ready(listed, Set.of("shardId-000000000000"),
                        Set.of("shardId-000000000001"))));
        assertEquals(List.of("shardId-000000000002", "shardId-000000000003"),
                ids(ShardGraph.ready(listed,
                        Set.of("shardId-000000000000", "shardId-000000000001"), Set.of())));
    }

    @Test
    void aParentNoLongerListedCountsAsFinished() {
        List<ShardInfo> listed = List.of(new ShardInfo("child", List.of("expired"), false));
        assertEquals(List.of("child"), ids(ShardGraph.ready(listed, Set.of(), Set.of())));
    }

    @Test
    void backoffDoublesAndIsBounded() {
        assertEquals(100, Backoff.delayMillis(1, 100, 10_000));
        assertEquals(200, Backoff.delayMillis(2, 100, 10_000));
        assertEquals(800, Backoff.delayMillis(4, 100, 10_000));
        assertEquals(10_000, Backoff.delayMillis(8, 100, 10_000));
        assertEquals(10_000, Backoff.delayMillis(1_000, 100, 10_000));
    }

    @Test
    void splitsAndEnumeratorStateRoundTrip() throws IOException {
        KinesisShardSplitSerializer splits = new KinesisShardSplitSerializer();
        for (KinesisShardSplit split : List.of(
                new KinesisShardSplit("s-1", List.of(), StartPosition.TRIM_HORIZON, 0, null, false),
                new KinesisShardSplit("s-2", List.of("s-0", "s-1"), StartPosition.AT_TIMESTAMP,
                        1_700_000_000_000L, "49590338271490256608559692538361571095921575989136588898", true))) {
            assertEquals(split, splits.deserialize(splits.getVersion(), splits.serialize(split)));
        }
        assertThrows(IOException.class, () -> splits.deserialize(99, new byte[0]));
        KinesisEnumeratorStateSerializer states = new KinesisEnumeratorStateSerializer();
        KinesisEnumeratorState state = new KinesisEnumeratorState(
                Set.of("a", "b"), Set.of("c"), true, Set.of("a", "c"));
        KinesisEnumeratorState back = states.deserialize(states.getVersion(), states.serialize(state));
        assertEquals(state.assignedShards, back.assignedShards);
        assertEquals(state.finishedShards, back.finishedShards);
        assertEquals(state.initialShards, back.initialShards);
        assertEquals(true, back.initialDiscoveryDone);
    }

    @Test
    void boundedOnlyWhenAsked() {
        KinesisSourceConfig config = KinesisSourceConfig.forStream("s");
        assertEquals(Boundedness.CONTINUOUS_UNBOUNDED, KinesisSource.of(config).getBoundedness());
        KinesisSourceConfig bounded = config.withBounded(true).withRegion("us-east-1");
        assertEquals(Boundedness.BOUNDED, KinesisSource.of(bounded).getBoundedness());
        assertEquals("KinesisSourceConfig{stream=s, region=us-east-1, endpoint=null, "
                + "credentials=default chain, start=TRIM_HORIZON, bounded}", bounded.toString());
    }

    @Test
    void aBadConfigurationIsOneReason() {
        IllegalArgumentException error = assertThrows(IllegalArgumentException.class,
                () -> KinesisSource.of(KinesisSourceConfig.forStream("s").withPolling(0, 1, 1)));
        assertEquals("Kinesis source: records per GetRecords call must be 1..10000, not 0",
                error.getMessage());
        assertThrows(IllegalArgumentException.class,
                () -> KinesisSource.of(KinesisSourceConfig.forStream("s").withEndpoint("127.0.0.1:1")));
    }
}
