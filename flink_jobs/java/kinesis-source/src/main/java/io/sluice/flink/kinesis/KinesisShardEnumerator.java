package io.sluice.flink.kinesis;

import io.sluice.flink.kinesis.ShardEvents.ShardsFinished;
import io.sluice.flink.kinesis.ShardEvents.ShardsFinishedAck;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.apache.flink.api.connector.source.SourceEvent;
import org.apache.flink.api.connector.source.SplitEnumerator;
import org.apache.flink.api.connector.source.SplitEnumeratorContext;
import org.apache.flink.util.FlinkRuntimeException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import software.amazon.awssdk.services.kinesis.KinesisClient;

/**
 * Discovers the stream's shards every {@code discoveryIntervalMillis} and hands each shard, as one
 * split, to the least loaded reader once its parents are finished. Readers report shards they read
 * to the end; the enumerator remembers them (checkpointed) and acknowledges, so a reader can drop
 * its own record of the fact once a checkpoint holds it.
 *
 * <p>Bounded ({@link KinesisSourceConfig#bounded}): only the shards of the first listing are read
 * (a parent's children of that listing after it, as always); once each of them is assigned or
 * finished, every reader is told there are no more splits, and a reader that has finished its
 * shards then ends. A reader told so gets no split again; a failed reader's shards wait for it to
 * register anew (it restarts from the checkpoint) and are handed to it before it is told.
 */
final class KinesisShardEnumerator implements SplitEnumerator<KinesisShardSplit, KinesisEnumeratorState> {
    private static final Logger LOG = LoggerFactory.getLogger(KinesisShardEnumerator.class);
    private static final int UNKNOWN_SUBTASK = -1;

    private final SplitEnumeratorContext<KinesisShardSplit> context;
    private final KinesisSourceConfig config;
    private final Map<String, Integer> assigned = new HashMap<>();
    private final Set<String> finished = new HashSet<>();
    private final Set<String> initialShards = new HashSet<>();
    private boolean initialDiscoveryDone;
    private List<ShardInfo> listed = List.of();
    /** Finishes not yet in a completed checkpoint: shard -> (subtask, last snapshot before it). */
    private final Map<String, long[]> recentFinishes = new HashMap<>();
    private long lastSnapshotId = Long.MIN_VALUE;
    /** Bounded: readers told there are no more splits (a reader registering anew is not). */
    private final Set<Integer> toldNoMoreSplits = new HashSet<>();
    private KinesisClient client;

    KinesisShardEnumerator(
            SplitEnumeratorContext<KinesisShardSplit> context,
            KinesisSourceConfig config,
            KinesisEnumeratorState state) {
        this.context = context;
        this.config = config;
        for (String shard : state.assignedShards) {
            assigned.put(shard, UNKNOWN_SUBTASK);
        }
        finished.addAll(state.finishedShards);
        initialShards.addAll(state.initialShards);
        initialDiscoveryDone = state.initialDiscoveryDone;
    }

    @Override
    public void start() {
        client = KinesisClients.create(config);
        context.callAsync(
                () -> ShardLister.list(client, config.streamName),
                this::onShardsListed,
                0L,
                config.discoveryIntervalMillis);
    }

    void onShardsListed(List<ShardInfo> shards, Throwable error) { // package-private: tests
        if (error != null) {
            if (!initialDiscoveryDone) {
                throw new FlinkRuntimeException(
                        "Kinesis source: cannot list the shards of stream '" + config.streamName
                                + "' at " + (config.endpoint == null ? "AWS" : config.endpoint)
                                + ": " + error.getMessage(),
                        error);
            }
            LOG.warn("Kinesis source: listing shards of {} failed, retrying in {} ms: {}",
                    config.streamName, config.discoveryIntervalMillis, error.toString());
            return;
        }
        listed = shards;
        if (!initialDiscoveryDone) {
            for (ShardInfo shard : shards) {
                initialShards.add(shard.shardId);
            }
            initialDiscoveryDone = true;
        }
        assignReady();
    }

    private void assignReady() {
        Set<Integer> readers = new HashSet<>(context.registeredReaders().keySet());
        readers.removeAll(toldNoMoreSplits);
        if (readers.isEmpty()) {
            return;
        }
        for (ShardInfo shard : ShardGraph.ready(listed, finished, assigned.keySet())) {
            if (config.bounded && !initialShards.contains(shard.shardId)) {
                continue; // bounded: only what the first listing held
            }
            int subtask = leastLoaded(readers);
            boolean initial = initialShards.contains(shard.shardId);
            KinesisShardSplit split =
                    new KinesisShardSplit(
                            shard.shardId,
                            shard.parentShardIds,
                            initial ? config.startPosition : StartPosition.TRIM_HORIZON,
                            config.startTimestampMillis,
                            null,
                            false);
            LOG.info("Kinesis source: assigning {} to reader {}", split, subtask);
            context.assignSplit(split, subtask);
            assigned.put(shard.shardId, subtask);
        }
        if (config.bounded && initialDiscoveryDone && everyInitialShardHandedOut()) {
            for (int subtask : readers) {
                LOG.info("Kinesis source (bounded): no more shards for reader {}", subtask);
                context.signalNoMoreSplits(subtask);
                toldNoMoreSplits.add(subtask);
            }
        }
    }

    /** Every shard of the first listing that is still listed is assigned or finished (one that
     * left the stream's retention since has nothing left to read). */
    private boolean everyInitialShardHandedOut() {
        for (ShardInfo shard : listed) {
            String id = shard.shardId;
            if (initialShards.contains(id) && !finished.contains(id) && !assigned.containsKey(id)) {
                return false;
            }
        }
        return true;
    }

    private int leastLoaded(Set<Integer> readers) {
        Map<Integer, Integer> load = new HashMap<>();
        for (int subtask : readers) {
            load.put(subtask, 0);
        }
        for (int subtask : assigned.values()) {
            load.computeIfPresent(subtask, (k, v) -> v + 1);
        }
        int best = -1;
        int bestLoad = Integer.MAX_VALUE;
        for (int subtask : new TreeSet<>(readers)) {
            if (load.get(subtask) < bestLoad) {
                best = subtask;
                bestLoad = load.get(subtask);
            }
        }
        return best;
    }

    @Override
    public void handleSplitRequest(int subtaskId, String requesterHostname) {
        // Splits are pushed on discovery and on finishes; readers never ask.
    }

    @Override
    public void addSplitsBack(List<KinesisShardSplit> splits, int subtaskId) {
        // The reader restarts from its last checkpoint. What it finished since then is in that
        // checkpoint as a split it is still reading: it stays assigned to the reader (handing it
        // out again would give the reader the shard twice), which reads it again and reports it
        // again. What it was given since then (``splits``, finished or not) is handed out anew.
        List<String> unfinished = new ArrayList<>();
        recentFinishes.entrySet().removeIf(entry -> {
            if (entry.getValue()[0] == subtaskId) {
                finished.remove(entry.getKey());
                assigned.put(entry.getKey(), subtaskId);
                unfinished.add(entry.getKey());
                return true;
            }
            return false;
        });
        for (KinesisShardSplit split : splits) {
            assigned.remove(split.shardId);
        }
        LOG.info("Kinesis source: reader {} failed; taken back {}, finished again later {}",
                subtaskId, splits, unfinished);
        assignReady();
    }

    @Override
    public void addReader(int subtaskId) {
        toldNoMoreSplits.remove(subtaskId); // a new reader instance (a restart) was not told
        assignReady();
    }

    @Override
    public void handleSourceEvent(int subtaskId, SourceEvent event) {
        if (event instanceof ShardsFinished) {
            List<String> shards = ((ShardsFinished) event).shardIds;
            for (String shard : shards) {
                if (finished.add(shard)) {
                    recentFinishes.put(shard, new long[] {subtaskId, lastSnapshotId});
                }
                assigned.remove(shard);
            }
            LOG.info("Kinesis source: reader {} finished {}", subtaskId, shards);
            context.sendEventToSourceReader(subtaskId, new ShardsFinishedAck(shards));
            assignReady();
        }
    }

    @Override
    public KinesisEnumeratorState snapshotState(long checkpointId) {
        lastSnapshotId = checkpointId;
        return new KinesisEnumeratorState(
                assigned.keySet(), finished, initialDiscoveryDone, initialShards);
    }

    @Override
    public void notifyCheckpointComplete(long checkpointId) {
        recentFinishes.values().removeIf(finish -> finish[1] < checkpointId);
    }

    @Override
    public void close() {
        if (client != null) {
            client.close();
        }
    }
}
