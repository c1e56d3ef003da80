package io.sluice.flink.kinesis;

/** Bounded exponential backoff: base, 2 x base, 4 x base, ... never more than max. */
final class Backoff {
    private Backoff() {}

    /** The wait before retry number {@code attempt} (1 = the first retry). */
    static long delayMillis(int attempt, long baseMillis, long maxMillis) {
        if (attempt <= 1) {
            return Math.min(baseMillis, maxMillis);
        }
        int shift = Math.min(attempt - 1, 30);
        long delay = baseMillis << shift;
        return delay <= 0 || delay > maxMillis ? maxMillis : delay;
    }
}
