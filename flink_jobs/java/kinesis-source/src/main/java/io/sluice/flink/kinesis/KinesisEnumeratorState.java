package io.sluice.flink.kinesis;

import java.util.Set;
import java.util.TreeSet;

/**
 * What the enumerator checkpoints: the shards handed to a reader (their progress lives in that
 * reader's checkpoint), the shards read to their end, and the shards found by the job's first
 * discovery (those start at the configured position; every later shard starts at its beginning).
 */
public final class KinesisEnumeratorState {
    final Set<String> assignedShards;
    final Set<String> finishedShards;
    final boolean initialDiscoveryDone;
    final Set<String> initialShards;

    KinesisEnumeratorState(
            Set<String> assignedShards,
            Set<String> finishedShards,
            boolean initialDiscoveryDone,
            Set<String> initialShards) {
        this.assignedShards = Set.copyOf(new TreeSet<>(assignedShards));
        this.finishedShards = Set.copyOf(new TreeSet<>(finishedShards));
        this.initialDiscoveryDone = initialDiscoveryDone;
        this.initialShards = Set.copyOf(new TreeSet<>(initialShards));
    }

    static KinesisEnumeratorState empty() {
        return new KinesisEnumeratorState(Set.of(), Set.of(), false, Set.of());
    }
}
