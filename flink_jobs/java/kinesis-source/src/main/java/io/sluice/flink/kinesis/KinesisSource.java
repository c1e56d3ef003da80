package io.sluice.flink.kinesis;

import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.Boundedness;
import org.apache.flink.api.connector.source.Source;
import org.apache.flink.api.connector.source.SourceReader;
import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.api.connector.source.SplitEnumerator;
import org.apache.flink.api.connector.source.SplitEnumeratorContext;
import org.apache.flink.api.java.typeutils.ResultTypeQueryable;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.core.io.SimpleVersionedSerializer;
import org.apache.flink.types.Row;
import software.amazon.awssdk.core.exception.SdkException;
import software.amazon.awssdk.services.kinesis.KinesisClient;

/**
 * Sluice's Kinesis source for Flink 2.x (FLIP-27): one split per shard, children after their
 * parents, the last emitted sequence number checkpointed per shard (exactly once with Flink's
 * checkpoints). Emits one {@link Row} per Kinesis record, KPL aggregates kept whole:
 * {@code (shard_id STRING, sequence_number STRING, arrival_millis BIGINT, data BYTES)}.
 * Unbounded by default; {@link KinesisSourceConfig#bounded} reads the shards listed at start until
 * each is caught up, then ends (a backfill, or a test over a pre-filled stream).
 */
public final class KinesisSource
        implements Source<Row, KinesisShardSplit, KinesisEnumeratorState>, ResultTypeQueryable<Row> {
    private static final long serialVersionUID = 1L;

    public static final String[] FIELD_NAMES = {
        "shard_id", "sequence_number", "arrival_millis", "data"
    };

    private final KinesisSourceConfig config;

    private KinesisSource(KinesisSourceConfig config) {
        config.validate();
        this.config = config;
    }

    /** The source for a validated configuration (an IllegalArgumentException says what is wrong). */
    public static KinesisSource of(KinesisSourceConfig config) {
        return new KinesisSource(config);
    }

    /**
     * The start-up check of a job that reads this source: one ListShards of the stream (every
     * page), from where the job is built. Returns the number of shards; an unreachable endpoint, a
     * missing stream or refused credentials is an {@link IllegalStateException} whose message is one
     * line starting "Kinesis source:", so the job stops at start instead of restarting its tasks.
     */
    public int checkStream() {
        String where = config.endpoint == null ? "" : " at " + config.endpoint;
        try (KinesisClient client = KinesisClients.create(config)) {
            int shards = ShardLister.list(client, config.streamName).size();
            if (shards == 0) {
                throw new IllegalStateException(
                        "Kinesis source: stream " + config.streamName + where + " has no shards");
            }
            return shards;
        } catch (SdkException e) {
            String reason = String.valueOf(e.getMessage()).split("\\R", 2)[0];
            throw new IllegalStateException(
                    "Kinesis source: cannot list the shards of stream "
                            + config.streamName
                            + where
                            + ": "
                            + reason);
        }
    }

    /** The type of the rows this source emits. */
    public static RowTypeInfo rowType() {
        return new RowTypeInfo(
                new TypeInformation<?>[] {
                    Types.STRING, Types.STRING, Types.LONG,
                    PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO
                },
                FIELD_NAMES);
    }

    public KinesisSourceConfig config() {
        return config;
    }

    @Override
    public Boundedness getBoundedness() {
        return config.bounded ? Boundedness.BOUNDED : Boundedness.CONTINUOUS_UNBOUNDED;
    }

    @Override
    public SourceReader<Row, KinesisShardSplit> createReader(SourceReaderContext context) {
        return new KinesisSourceReader(config, context);
    }

    @Override
    public SplitEnumerator<KinesisShardSplit, KinesisEnumeratorState> createEnumerator(
            SplitEnumeratorContext<KinesisShardSplit> context) {
        return new KinesisShardEnumerator(context, config, KinesisEnumeratorState.empty());
    }

    @Override
    public SplitEnumerator<KinesisShardSplit, KinesisEnumeratorState> restoreEnumerator(
            SplitEnumeratorContext<KinesisShardSplit> context, KinesisEnumeratorState state) {
        return new KinesisShardEnumerator(context, config, state);
    }

    @Override
    public SimpleVersionedSerializer<KinesisShardSplit> getSplitSerializer() {
        return new KinesisShardSplitSerializer();
    }

    @Override
    public SimpleVersionedSerializer<KinesisEnumeratorState> getEnumeratorCheckpointSerializer() {
        return new KinesisEnumeratorStateSerializer();
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return rowType();
    }
}
