package io.sluice.flink.kinesis;

/**
 * Where a shard without checkpointed state starts. Applies to the shards found by the first
 * discovery of a fresh job; shards that appear later (children of a reshard) always start at their
 * beginning, so nothing written to them is skipped.
 */
public enum StartPosition {
    /** The oldest record the stream still keeps. */
    TRIM_HORIZON,
    /** Only records written after the job started. */
    LATEST,
    /** The first record that arrived at or after {@link KinesisSourceConfig#startTimestampMillis}. */
    AT_TIMESTAMP
}
