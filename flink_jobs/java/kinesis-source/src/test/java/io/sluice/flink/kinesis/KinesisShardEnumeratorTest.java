package io.sluice.flink.kinesis;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.sluice.flink.kinesis.ShardEvents.ShardsFinished;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.function.BiConsumer;
import org.apache.flink.api.connector.source.ReaderInfo;
import org.apache.flink.api.connector.source.SourceEvent;
import org.apache.flink.api.connector.source.SplitEnumeratorContext;
import org.apache.flink.api.connector.source.SplitsAssignment;
import org.apache.flink.metrics.groups.SplitEnumeratorMetricGroup;
import org.junit.jupiter.api.Test;

/** The enumerator's hand-outs across a reader's failure, on a context that records them. */
class KinesisShardEnumeratorTest {
    private static final String A = "shardId-000000000000";
    private static final String B = "shardId-000000000001";

    /** Records assignments; readers register and fail by hand. */
    private static final class Context implements SplitEnumeratorContext<KinesisShardSplit> {
        final Map<Integer, ReaderInfo> readers = new HashMap<>();
        final List<String> assignedShards = new ArrayList<>();

        @Override
        public SplitEnumeratorMetricGroup metricGroup() {
            throw new UnsupportedOperationException();
        }

        @Override
        public void sendEventToSourceReader(int subtaskId, SourceEvent event) {}

        @Override
        public int currentParallelism() {
            return 1;
        }

        @Override
        public Map<Integer, ReaderInfo> registeredReaders() {
            return readers;
        }

        @Override
        public void assignSplits(SplitsAssignment<KinesisShardSplit> assignment) {
            assignment.assignment().values().forEach(
                    splits -> splits.forEach(split -> assignedShards.add(split.shardId)));
        }

        @Override
        public void signalNoMoreSplits(int subtask) {}

        @Override
        public <T> void callAsync(Callable<T> callable, BiConsumer<T, Throwable> handler) {}

        @Override
        public <T> void callAsync(
                Callable<T> callable, BiConsumer<T, Throwable> handler, long delay, long period) {}

        @Override
        public void runInCoordinatorThread(Runnable runnable) {
            runnable.run();
        }

        void register(int subtask) {
            readers.put(subtask, new ReaderInfo(subtask, "localhost"));
        }
    }

    private static KinesisShardEnumerator started(Context context) {
        KinesisShardEnumerator enumerator = new KinesisShardEnumerator(
                context, KinesisSourceConfig.forStream("s").withBounded(true),
                KinesisEnumeratorState.empty());
        context.register(0);
        enumerator.addReader(0);
        enumerator.onShardsListed(
                List.of(new ShardInfo(A, List.of(), false), new ShardInfo(B, List.of(), false)),
                null);
        return enumerator;
    }

    @Test
    void aShardFinishedAfterTheRestoredCheckpointIsNotHandedOutTwice() {
        // GIVEN both shards read by reader 0, checkpoint 1 taken with both in its state, then A
        // read to its end
        Context context = new Context();
        KinesisShardEnumerator enumerator = started(context);
        assertEquals(List.of(A, B), context.assignedShards);
        enumerator.snapshotState(1);
        enumerator.notifyCheckpointComplete(1);
        enumerator.handleSourceEvent(0, new ShardsFinished(List.of(A)));
        // WHEN the reader fails and restarts from checkpoint 1 (nothing was assigned since)
        context.readers.remove(0);
        enumerator.addSplitsBack(List.of(), 0);
        context.register(0);
        enumerator.addReader(0);
        // THEN A is not handed out again: the restored reader reads it from its checkpoint
        assertEquals(List.of(A, B), context.assignedShards);
        // and its second finish is taken as before
        enumerator.handleSourceEvent(0, new ShardsFinished(List.of(A)));
        assertEquals(List.of(A, B), context.assignedShards);
    }

    @Test
    void aShardAssignedAfterTheRestoredCheckpointIsHandedOutAgainOnce() {
        // GIVEN A and B assigned after the last checkpoint (none was taken), and A finished
        Context context = new Context();
        KinesisShardEnumerator enumerator = started(context);
        enumerator.handleSourceEvent(0, new ShardsFinished(List.of(A)));
        // WHEN the reader fails: Flink gives back what it was assigned since the checkpoint
        context.readers.remove(0);
        enumerator.addSplitsBack(List.of(split(A), split(B)), 0);
        context.register(0);
        enumerator.addReader(0);
        // THEN each is handed out once more
        assertEquals(List.of(A, B, A, B), context.assignedShards);
    }

    private static KinesisShardSplit split(String shard) {
        return new KinesisShardSplit(shard, List.of(), StartPosition.TRIM_HORIZON, 0, null, false);
    }
}
