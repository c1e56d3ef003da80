package io.sluice.flink.kinesis;

import io.sluice.flink.kinesis.ShardEvents.ShardsFinished;
import io.sluice.flink.kinesis.ShardEvents.ShardsFinishedAck;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.connector.source.SourceEvent;
import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.connector.base.source.reader.SingleThreadMultiplexSourceReaderBase;
import org.apache.flink.types.Row;

/**
 * The reader: Flink's single-fetcher reader base over {@link KinesisShardSplitReader}. A shard it
 * reads to the end is reported to the enumerator and kept in this reader's checkpoints as a
 * finished marker until a checkpoint taken after the enumerator's acknowledgement completes, so
 * that, whichever checkpoint a restore uses, the shard is either still being read or known
 * finished (its children are then released), never lost between the two.
 */
final class KinesisSourceReader
        extends SingleThreadMultiplexSourceReaderBase<
                KinesisRecord, Row, KinesisShardSplit, KinesisShardSplitState> {
    private final Map<String, KinesisShardSplit> finishedMarkers = new HashMap<>();
    private final List<String> acknowledged = new ArrayList<>();
    private final Map<String, Long> droppableFrom = new HashMap<>();

    KinesisSourceReader(KinesisSourceConfig config, SourceReaderContext context) {
        super(
                () -> new KinesisShardSplitReader(config),
                new KinesisRowEmitter(),
                context.getConfiguration(),
                context);
    }

    @Override
    public void addSplits(List<KinesisShardSplit> splits) {
        List<KinesisShardSplit> toRead = new ArrayList<>();
        List<String> finished = new ArrayList<>();
        for (KinesisShardSplit split : splits) {
            if (split.finishedMarker) {
                finishedMarkers.put(split.shardId, split);
                finished.add(split.shardId);
            } else {
                toRead.add(split);
            }
        }
        if (!finished.isEmpty()) {
            context.sendSourceEventToCoordinator(new ShardsFinished(finished));
        }
        if (!toRead.isEmpty()) {
            super.addSplits(toRead);
        }
    }

    @Override
    protected void onSplitFinished(Map<String, KinesisShardSplitState> finished) {
        List<String> shards = new ArrayList<>(finished.keySet());
        for (KinesisShardSplitState state : finished.values()) {
            finishedMarkers.put(state.split.shardId, state.toSplit().asFinishedMarker());
        }
        context.sendSourceEventToCoordinator(new ShardsFinished(shards));
    }

    @Override
    public void handleSourceEvents(SourceEvent event) {
        if (event instanceof ShardsFinishedAck) {
            for (String shard : ((ShardsFinishedAck) event).shardIds) {
                if (finishedMarkers.containsKey(shard)) {
                    acknowledged.add(shard);
                }
            }
        } else {
            super.handleSourceEvents(event);
        }
    }

    @Override
    public List<KinesisShardSplit> snapshotState(long checkpointId) {
        List<KinesisShardSplit> state = new ArrayList<>(super.snapshotState(checkpointId));
        state.addAll(finishedMarkers.values());
        // An acknowledgement that arrived before this snapshot was sent before the enumerator's
        // snapshot of the same checkpoint, so once this checkpoint completes the marker is moot.
        for (String shard : acknowledged) {
            droppableFrom.putIfAbsent(shard, checkpointId);
        }
        acknowledged.clear();
        return state;
    }

    @Override
    public void notifyCheckpointComplete(long checkpointId) throws Exception {
        super.notifyCheckpointComplete(checkpointId);
        droppableFrom.entrySet().removeIf(entry -> {
            if (entry.getValue() <= checkpointId) {
                finishedMarkers.remove(entry.getKey());
                return true;
            }
            return false;
        });
    }

    @Override
    protected KinesisShardSplitState initializedState(KinesisShardSplit split) {
        return new KinesisShardSplitState(split);
    }

    @Override
    protected KinesisShardSplit toSplitType(String splitId, KinesisShardSplitState state) {
        return state.toSplit();
    }
}
