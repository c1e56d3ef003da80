package io.sluice.flink.ops;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.types.Row;

/**
 * The PyFlink job's keyed, timed steps, in Java (called through py4j from
 * {@code flink_jobs/app/operators.py}). Why Java: PyFlink 2.2 hands the timers a Python function
 * registers to the task's mailbox, and a checkpoint taken before that mail runs holds the
 * function's state without those timers; after a restore such a key's timer never fires (a
 * window never written, a buffer never flushed). Timers registered here are in the checkpoint
 * with the state they belong to. The Python functions after them are stateless.
 */
public final class SluiceOperators {
    /** Row(key, frame). */
    public static final TypeInformation<Row> BATCH =
            Types.ROW_NAMED(new String[] {"key", "frame"}, Types.STRING,
                    Types.PRIMITIVE_ARRAY(Types.BYTE));
    /** Row(key, late, frame). */
    public static final TypeInformation<Row> CLOSED =
            Types.ROW_NAMED(new String[] {"key", "late", "frame"}, Types.STRING, Types.BOOLEAN,
                    Types.PRIMITIVE_ARRAY(Types.BYTE));

    private SluiceOperators() {}

    private static final class FirstField implements KeySelector<Row, String> {
        private static final long serialVersionUID = 1L;

        @Override
        public String getKey(Row row) {
            return (String) row.getField(0);
        }
    }

    /** {@link BatchRecords} keyed by the rows' first field (the shard). */
    public static DataStream<Row> batchRecords(
            DataStream<Row> records, int maxRecords, long maxMillis, boolean deduplicate) {
        return records.keyBy(new FirstField())
                .process(new BatchRecords(maxRecords, maxMillis, deduplicate), BATCH)
                .name("BatchRecords");
    }

    /** {@link CloseWindows} keyed by the partials' window key. */
    public static DataStream<Row> closeWindows(DataStream<Row> partials, String name) {
        return partials.keyBy(new FirstField())
                .process(new CloseWindows(), CLOSED)
                .name("CloseWindows[" + name + "]");
    }
}
