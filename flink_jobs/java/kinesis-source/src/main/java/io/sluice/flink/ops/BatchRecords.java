package io.sluice.flink.ops;

import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * One shard's records, buffered in keyed state and emitted as one frame ({@link Frames}) when
 * {@code maxRecords} are buffered, {@code maxMillis} of processing time after the first, or
 * before the watermark passes the first one's arrival (so a window never closes while records for
 * it wait here). Out: Row(shard, frame). Input rows are the Kinesis source's (shard_id,
 * sequence_number, arrival_millis, data: a whole record) or the archive's user records (shard,
 * sequence, sub-sequence, arrival seconds, data). With {@code deduplicate} a position seen before
 * is dropped (archive files may overlap).
 */
public final class BatchRecords extends KeyedProcessFunction<String, Row, Row> {
    private static final long serialVersionUID = 1L;

    private final int maxRecords;
    private final long maxMillis;
    private final boolean deduplicate;
    private transient ListState<byte[]> buffer;
    private transient ValueState<Integer> size;
    private transient MapState<String, Boolean> seen;

    public BatchRecords(int maxRecords, long maxMillis, boolean deduplicate) {
        if (maxRecords < 1 || maxMillis < 1) {
            throw new IllegalArgumentException(
                    "BatchRecords: maxRecords and maxMillis must be at least 1");
        }
        this.maxRecords = maxRecords;
        this.maxMillis = maxMillis;
        this.deduplicate = deduplicate;
    }

    @Override
    public void open(OpenContext context) {
        buffer = getRuntimeContext().getListState(
                new ListStateDescriptor<>("buffer", byte[].class));
        size = getRuntimeContext().getState(new ValueStateDescriptor<>("size", Types.INT));
        if (deduplicate) {
            seen = getRuntimeContext().getMapState(
                    new MapStateDescriptor<>("seen", Types.STRING, Types.BOOLEAN));
        }
    }

    @Override
    public void processElement(Row row, Context ctx, Collector<Row> out) throws Exception {
        String sequence = (String) row.getField(1);
        int sub;
        double arrival;
        byte[] data;
        if (row.getArity() == 4) { // a Kinesis record: arrival in ms, maybe a KPL aggregate
            sub = -1;
            arrival = ((Number) row.getField(2)).longValue() / 1000.0;
            data = (byte[]) row.getField(3);
        } else {
            sub = ((Number) row.getField(2)).intValue();
            arrival = ((Number) row.getField(3)).doubleValue();
            data = (byte[]) row.getField(4);
        }
        if (deduplicate) {
            String position = sequence + ":" + sub;
            if (seen.contains(position)) {
                return;
            }
            seen.put(position, true);
        }
        buffer.add(Frames.record(sequence, sub, arrival, data));
        Integer before = size.value();
        int now = (before == null ? 0 : before) + 1;
        if (now >= maxRecords) {
            flush(ctx.getCurrentKey(), out);
            return;
        }
        size.update(now);
        if (now == 1) {
            ctx.timerService().registerProcessingTimeTimer(
                    ctx.timerService().currentProcessingTime() + maxMillis);
            ctx.timerService().registerEventTimeTimer((long) Math.floor(arrival * 1000));
        }
    }

    @Override
    public void onTimer(long timestamp, OnTimerContext ctx, Collector<Row> out) throws Exception {
        if (size.value() != null) {
            flush(ctx.getCurrentKey(), out);
        }
    }

    private void flush(String key, Collector<Row> out) throws Exception {
        out.collect(Row.of(key, Frames.frame(buffer.get(), false)));
        buffer.clear();
        size.clear();
    }
}
