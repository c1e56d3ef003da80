package io.sluice.flink.kinesis;

import java.io.IOException;
import java.time.Instant;
import java.util.ArrayDeque;
import java.util.HashSet;
import java.util.Iterator;
import java.util.Set;
import org.apache.flink.connector.base.source.reader.RecordsBySplits;
import org.apache.flink.connector.base.source.reader.RecordsWithSplitIds;
import org.apache.flink.connector.base.source.reader.splitreader.SplitReader;
import org.apache.flink.connector.base.source.reader.splitreader.SplitsAddition;
import org.apache.flink.connector.base.source.reader.splitreader.SplitsChange;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import software.amazon.awssdk.core.exception.SdkException;
import software.amazon.awssdk.services.kinesis.KinesisClient;
import software.amazon.awssdk.services.kinesis.model.ExpiredIteratorException;
import software.amazon.awssdk.services.kinesis.model.GetRecordsRequest;
import software.amazon.awssdk.services.kinesis.model.GetRecordsResponse;
import software.amazon.awssdk.services.kinesis.model.GetShardIteratorRequest;
import software.amazon.awssdk.services.kinesis.model.LimitExceededException;
import software.amazon.awssdk.services.kinesis.model.ProvisionedThroughputExceededException;
import software.amazon.awssdk.services.kinesis.model.Record;
import software.amazon.awssdk.services.kinesis.model.ShardIteratorType;

/**
 * Polls the shards of one reader with GetRecords, one call per {@link #fetch()}, round robin over
 * the shards whose next call is due: at most {@code maxRecordsPerCall} records, then at least
 * {@code minCallIntervalMillis} before the next call on that shard ({@code idleBackoffMillis} after
 * a call that found nothing new). Throttled calls wait a doubling, bounded delay; an expired
 * iterator is fetched again after the last sequence number read. A shard ends when Kinesis gives no
 * next iterator, or, for emulators that always give one (moto), when ListShards shows it closed and
 * a call finds it drained. A bounded source also ends an open shard once a call finds it drained.
 */
final class KinesisShardSplitReader implements SplitReader<KinesisRecord, KinesisShardSplit> {
    private static final Logger LOG = LoggerFactory.getLogger(KinesisShardSplitReader.class);

    private static final class Cursor {
        final KinesisShardSplit split;
        String iterator;
        String lastFetched;
        long nextCallAt;
        int throttled;

        Cursor(KinesisShardSplit split) {
            this.split = split;
            this.lastFetched = split.lastSequenceNumber;
        }
    }

    private final KinesisSourceConfig config;
    private final KinesisClient client;
    private final ArrayDeque<Cursor> cursors = new ArrayDeque<>();
    private final Object wakeLock = new Object();
    private boolean wakeRequested;
    private Set<String> closedShards = new HashSet<>();
    private long closedListedAt; // epoch ms of the last ListShards (0: never)

    KinesisShardSplitReader(KinesisSourceConfig config) {
        this(config, KinesisClients.create(config));
    }

    KinesisShardSplitReader(KinesisSourceConfig config, KinesisClient client) {
        this.config = config;
        this.client = client;
    }

    @Override
    public RecordsWithSplitIds<KinesisRecord> fetch() throws IOException {
        long now = System.currentTimeMillis();
        Cursor due = null;
        long nextDue = Long.MAX_VALUE;
        for (Iterator<Cursor> it = cursors.iterator(); it.hasNext(); ) {
            Cursor cursor = it.next();
            if (cursor.nextCallAt <= now) {
                due = cursor;
                it.remove();
                break;
            }
            nextDue = Math.min(nextDue, cursor.nextCallAt);
        }
        if (due == null) {
            long wait = nextDue == Long.MAX_VALUE ? config.idleBackoffMillis : nextDue - now;
            sleep(Math.max(1L, Math.min(wait, Math.max(config.idleBackoffMillis, 1L))));
            return new RecordsBySplits.Builder<KinesisRecord>().build();
        }
        RecordsBySplits.Builder<KinesisRecord> batch = new RecordsBySplits.Builder<>();
        if (poll(due, now, batch)) {
            cursors.addLast(due);
        }
        return batch.build();
    }

    /** One GetRecords call on the shard; false when the shard is finished. */
    private boolean poll(Cursor cursor, long now, RecordsBySplits.Builder<KinesisRecord> batch)
            throws IOException {
        String shardId = cursor.split.shardId;
        try {
            if (cursor.iterator == null) {
                cursor.iterator = iteratorFor(cursor);
            }
            GetRecordsResponse response =
                    client.getRecords(
                            GetRecordsRequest.builder()
                                    .shardIterator(cursor.iterator)
                                    .limit(config.maxRecordsPerCall)
                                    .build());
            cursor.throttled = 0;
            for (Record record : response.records()) {
                Instant arrival = record.approximateArrivalTimestamp();
                batch.add(
                        shardId,
                        new KinesisRecord(
                                shardId,
                                record.sequenceNumber(),
                                arrival == null ? 0L : arrival.toEpochMilli(),
                                record.data().asByteArray()));
                cursor.lastFetched = record.sequenceNumber();
            }
            cursor.iterator = response.nextShardIterator();
            Long behind = response.millisBehindLatest();
            boolean drained = response.records().isEmpty() && (behind == null || behind == 0L);
            // Bounded: caught up (nothing new, 0 ms behind the tip) ends the shard, open or not.
            if (cursor.iterator == null || (drained && (config.bounded || isClosed(shardId, now)))) {
                LOG.info("Kinesis source: shard {} read to its {} (last {})", shardId,
                        cursor.iterator == null || !config.bounded ? "end" : "tip",
                        cursor.lastFetched);
                batch.addFinishedSplit(shardId);
                return false;
            }
            cursor.nextCallAt = now + (drained ? config.idleBackoffMillis : config.minCallIntervalMillis);
        } catch (ProvisionedThroughputExceededException | LimitExceededException throttled) {
            cursor.throttled++;
            if (cursor.throttled > config.throttleMaxRetries) {
                throw new IOException("Kinesis source: " + config.streamName + "/" + shardId
                        + " throttled " + cursor.throttled + " times in a row: "
                        + throttled.getMessage(), throttled);
            }
            long delay = Backoff.delayMillis(
                    cursor.throttled, config.throttleBaseMillis, config.throttleMaxMillis);
            LOG.warn("Kinesis source: {} throttled ({} in a row), next call in {} ms", shardId,
                    cursor.throttled, delay);
            cursor.nextCallAt = now + delay;
        } catch (ExpiredIteratorException expired) {
            LOG.info("Kinesis source: iterator of {} expired, fetching one after {}", shardId,
                    cursor.lastFetched);
            cursor.iterator = null;
        } catch (SdkException error) {
            throw new IOException(
                    "Kinesis source: GetRecords on " + config.streamName + "/" + shardId
                            + " failed: " + error.getMessage(),
                    error);
        }
        return true;
    }

    private String iteratorFor(Cursor cursor) {
        GetShardIteratorRequest.Builder request =
                GetShardIteratorRequest.builder()
                        .streamName(config.streamName)
                        .shardId(cursor.split.shardId);
        if (cursor.lastFetched != null) {
            request.shardIteratorType(ShardIteratorType.AFTER_SEQUENCE_NUMBER)
                    .startingSequenceNumber(cursor.lastFetched);
        } else {
            switch (cursor.split.startPosition) {
                case LATEST:
                    request.shardIteratorType(ShardIteratorType.LATEST);
                    break;
                case AT_TIMESTAMP:
                    request.shardIteratorType(ShardIteratorType.AT_TIMESTAMP)
                            .timestamp(Instant.ofEpochMilli(cursor.split.startTimestampMillis));
                    break;
                default:
                    request.shardIteratorType(ShardIteratorType.TRIM_HORIZON);
            }
        }
        return client.getShardIterator(request.build()).shardIterator();
    }

    private boolean isClosed(String shardId, long now) {
        if (!closedShards.contains(shardId) && now - closedListedAt >= config.discoveryIntervalMillis) {
            closedListedAt = now;
            Set<String> closed = new HashSet<>();
            for (ShardInfo shard : ShardLister.list(client, config.streamName)) {
                if (shard.closed) {
                    closed.add(shard.shardId);
                }
            }
            closedShards = closed;
        }
        return closedShards.contains(shardId);
    }

    private void sleep(long millis) throws IOException {
        synchronized (wakeLock) {
            try {
                if (!wakeRequested) {
                    wakeLock.wait(millis);
                }
            } catch (InterruptedException interrupted) {
                Thread.currentThread().interrupt();
                throw new IOException("Kinesis source: interrupted", interrupted);
            } finally {
                wakeRequested = false;
            }
        }
    }

    @Override
    public void handleSplitsChanges(SplitsChange<KinesisShardSplit> change) {
        if (change instanceof SplitsAddition) {
            for (KinesisShardSplit split : change.splits()) {
                cursors.addLast(new Cursor(split));
            }
        }
    }

    @Override
    public void wakeUp() {
        synchronized (wakeLock) {
            wakeRequested = true;
            wakeLock.notifyAll();
        }
    }

    @Override
    public void close() {
        client.close();
    }
}
