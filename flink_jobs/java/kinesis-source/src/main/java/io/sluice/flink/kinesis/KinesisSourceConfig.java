package io.sluice.flink.kinesis;

import java.io.Serializable;
import java.util.Objects;

/**
 * Everything the source can be told; immutable, validated on construction of the source. Built from
 * Python through py4j ({@code flink_jobs/kinesis_source.py}) with the {@code with*} methods, each of
 * which returns a new value.
 */
public final class KinesisSourceConfig implements Serializable {
    private static final long serialVersionUID = 1L;

    /** The stream's name (required). */
    public final String streamName;
    /** The AWS region, e.g. us-east-1 (null: the SDK's default region provider chain). */
    public final String region;
    /** An endpoint override such as http://127.0.0.1:5000 for moto server (null: AWS's endpoint). */
    public final String endpoint;
    /** Static credentials (both null: the SDK's default credentials provider chain, as on MSF). */
    public final String accessKeyId;
    public final String secretAccessKey;
    public final StartPosition startPosition;
    /** For {@link StartPosition#AT_TIMESTAMP}: epoch milliseconds. */
    public final long startTimestampMillis;
    /** GetRecords' Limit (1..10000). */
    public final int maxRecordsPerCall;
    /** Wait before polling a shard again after a call that returned nothing new. */
    public final long idleBackoffMillis;
    /** Least time between two GetRecords calls on one shard (Kinesis allows 5 calls/s per shard). */
    public final long minCallIntervalMillis;
    /** First and largest wait after a throttled call (doubling in between). */
    public final long throttleBaseMillis;
    public final long throttleMaxMillis;
    /** Throttled calls in a row on one shard before the reader fails (Flink then restarts it). */
    public final int throttleMaxRetries;
    /** How often the enumerator lists the stream's shards. */
    public final long discoveryIntervalMillis;
    /** HTTP connect and socket timeouts of the Kinesis client. */
    public final long httpTimeoutMillis;
    /**
     * Kinesis' binary CBOR protocol (the SDK's default; data is not base64-encoded). Off: JSON, for
     * emulators such as moto server that only speak JSON. The SDK reads this from the JVM-wide
     * system property aws.cborEnabled, which the source sets to false only when this is off.
     */
    public final boolean cborEnabled;
    /**
     * Bounded: each shard listed at start is read until it is caught up (a GetRecords call returns
     * nothing and is 0 ms behind the shard's tip), then finished; once every one is, the source
     * ends, so downstream the watermark goes to the end of time. Unbounded (the default): the
     * source reads forever and discovers new shards.
     */
    public final boolean bounded;

    private KinesisSourceConfig(
            String streamName,
            String region,
            String endpoint,
            String accessKeyId,
            String secretAccessKey,
            StartPosition startPosition,
            long startTimestampMillis,
            int maxRecordsPerCall,
            long idleBackoffMillis,
            long minCallIntervalMillis,
            long throttleBaseMillis,
            long throttleMaxMillis,
            int throttleMaxRetries,
            long discoveryIntervalMillis,
            long httpTimeoutMillis,
            boolean cborEnabled,
            boolean bounded) {
        this.streamName = streamName;
        this.region = region;
        this.endpoint = endpoint;
        this.accessKeyId = accessKeyId;
        this.secretAccessKey = secretAccessKey;
        this.startPosition = startPosition;
        this.startTimestampMillis = startTimestampMillis;
        this.maxRecordsPerCall = maxRecordsPerCall;
        this.idleBackoffMillis = idleBackoffMillis;
        this.minCallIntervalMillis = minCallIntervalMillis;
        this.throttleBaseMillis = throttleBaseMillis;
        this.throttleMaxMillis = throttleMaxMillis;
        this.throttleMaxRetries = throttleMaxRetries;
        this.discoveryIntervalMillis = discoveryIntervalMillis;
        this.httpTimeoutMillis = httpTimeoutMillis;
        this.cborEnabled = cborEnabled;
        this.bounded = bounded;
    }

    /** Defaults: TRIM_HORIZON, 1,000 records per call, 1 s idle backoff, 10 s discovery. */
    public static KinesisSourceConfig forStream(String streamName) {
        return new KinesisSourceConfig(
                streamName, null, null, null, null, StartPosition.TRIM_HORIZON, 0L, 1_000, 1_000L,
                200L, 100L, 5_000L, 8, 10_000L, 10_000L, true, false);
    }

    public KinesisSourceConfig withRegion(String value) {
        return new KinesisSourceConfig(streamName, value, endpoint, accessKeyId, secretAccessKey,
                startPosition, startTimestampMillis, maxRecordsPerCall, idleBackoffMillis,
                minCallIntervalMillis, throttleBaseMillis, throttleMaxMillis, throttleMaxRetries,
                discoveryIntervalMillis, httpTimeoutMillis, cborEnabled, bounded);
    }

    public KinesisSourceConfig withEndpoint(String value) {
        return new KinesisSourceConfig(streamName, region, value, accessKeyId, secretAccessKey,
                startPosition, startTimestampMillis, maxRecordsPerCall, idleBackoffMillis,
                minCallIntervalMillis, throttleBaseMillis, throttleMaxMillis, throttleMaxRetries,
                discoveryIntervalMillis, httpTimeoutMillis, cborEnabled, bounded);
    }

    public KinesisSourceConfig withStaticCredentials(String keyId, String secret) {
        return new KinesisSourceConfig(streamName, region, endpoint, keyId, secret,
                startPosition, startTimestampMillis, maxRecordsPerCall, idleBackoffMillis,
                minCallIntervalMillis, throttleBaseMillis, throttleMaxMillis, throttleMaxRetries,
                discoveryIntervalMillis, httpTimeoutMillis, cborEnabled, bounded);
    }

    /** {@code position}: TRIM_HORIZON, LATEST or AT_TIMESTAMP (then {@code timestampMillis}). */
    public KinesisSourceConfig withStartPosition(String position, long timestampMillis) {
        return new KinesisSourceConfig(streamName, region, endpoint, accessKeyId, secretAccessKey,
                StartPosition.valueOf(position), timestampMillis, maxRecordsPerCall,
                idleBackoffMillis, minCallIntervalMillis, throttleBaseMillis, throttleMaxMillis, throttleMaxRetries,
                discoveryIntervalMillis, httpTimeoutMillis, cborEnabled, bounded);
    }

    public KinesisSourceConfig withPolling(
            int recordsPerCall, long idleMillis, long minIntervalMillis) {
        return new KinesisSourceConfig(streamName, region, endpoint, accessKeyId, secretAccessKey,
                startPosition, startTimestampMillis, recordsPerCall, idleMillis, minIntervalMillis,
                throttleBaseMillis, throttleMaxMillis, throttleMaxRetries, discoveryIntervalMillis, httpTimeoutMillis, cborEnabled, bounded);
    }

    public KinesisSourceConfig withThrottleBackoff(long baseMillis, long maxMillis, int retries) {
        return new KinesisSourceConfig(streamName, region, endpoint, accessKeyId, secretAccessKey,
                startPosition, startTimestampMillis, maxRecordsPerCall, idleBackoffMillis,
                minCallIntervalMillis, baseMillis, maxMillis, retries, discoveryIntervalMillis,
                httpTimeoutMillis, cborEnabled, bounded);
    }

    public KinesisSourceConfig withHttpTimeout(long millis) {
        return new KinesisSourceConfig(streamName, region, endpoint, accessKeyId, secretAccessKey,
                startPosition, startTimestampMillis, maxRecordsPerCall, idleBackoffMillis,
                minCallIntervalMillis, throttleBaseMillis, throttleMaxMillis, throttleMaxRetries,
                discoveryIntervalMillis, millis, cborEnabled, bounded);
    }

    public KinesisSourceConfig withCbor(boolean enabled) {
        return new KinesisSourceConfig(streamName, region, endpoint, accessKeyId, secretAccessKey,
                startPosition, startTimestampMillis, maxRecordsPerCall, idleBackoffMillis,
                minCallIntervalMillis, throttleBaseMillis, throttleMaxMillis, throttleMaxRetries,
                discoveryIntervalMillis, httpTimeoutMillis, enabled, bounded);
    }

    /** See {@link #bounded}. */
    public KinesisSourceConfig withBounded(boolean value) {
        return new KinesisSourceConfig(streamName, region, endpoint, accessKeyId, secretAccessKey,
                startPosition, startTimestampMillis, maxRecordsPerCall, idleBackoffMillis,
                minCallIntervalMillis, throttleBaseMillis, throttleMaxMillis, throttleMaxRetries,
                discoveryIntervalMillis, httpTimeoutMillis, cborEnabled, value);
    }

    public KinesisSourceConfig withDiscoveryInterval(long millis) {
        return new KinesisSourceConfig(streamName, region, endpoint, accessKeyId, secretAccessKey,
                startPosition, startTimestampMillis, maxRecordsPerCall, idleBackoffMillis,
                minCallIntervalMillis, throttleBaseMillis, throttleMaxMillis, throttleMaxRetries, millis,
                httpTimeoutMillis, cborEnabled, bounded);
    }

    /** A one-line reason when a field is out of range; the source refuses to build then. */
    public void validate() {
        require(streamName != null && !streamName.isBlank(), "stream_name is required");
        require((accessKeyId == null) == (secretAccessKey == null),
                "static credentials need both an access key id and a secret access key");
        require(maxRecordsPerCall >= 1 && maxRecordsPerCall <= 10_000,
                "records per GetRecords call must be 1..10000, not " + maxRecordsPerCall);
        require(idleBackoffMillis >= 0 && minCallIntervalMillis >= 0,
                "idle backoff and call interval must be >= 0");
        require(throttleBaseMillis > 0 && throttleMaxMillis >= throttleBaseMillis,
                "throttle backoff needs 0 < base <= max");
        require(throttleMaxRetries >= 0, "throttle retries must be >= 0");
        require(discoveryIntervalMillis > 0, "discovery interval must be > 0");
        require(httpTimeoutMillis > 0, "HTTP timeout must be > 0");
        require(endpoint == null || endpoint.startsWith("http://") || endpoint.startsWith("https://"),
                "endpoint must be an http:// or https:// URL, not " + endpoint);
        Objects.requireNonNull(startPosition);
    }

    private static void require(boolean ok, String reason) {
        if (!ok) {
            throw new IllegalArgumentException("Kinesis source: " + reason);
        }
    }

    @Override
    public String toString() {
        return "KinesisSourceConfig{stream=" + streamName + ", region=" + region + ", endpoint="
                + endpoint + ", credentials=" + (accessKeyId == null ? "default chain" : "static")
                + ", start=" + startPosition + (cborEnabled ? "" : ", json")
                + (bounded ? ", bounded" : "") + "}";
    }
}
