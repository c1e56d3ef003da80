package io.sluice.flink.ops;

import java.util.List;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * One window key's partial aggregates, kept in keyed state until the watermark passes the window's
 * close time (an event-time timer), then emitted together: Row(key, false, frame of the partials)
 * ({@link Frames}). A partial that arrives after its window was emitted is emitted alone at once:
 * Row(key, true, frame of it), for its dead letter. Input: Row(key, close_millis, state).
 */
public final class CloseWindows extends KeyedProcessFunction<String, Row, Row> {
    private static final long serialVersionUID = 1L;

    private transient ListState<byte[]> partials;

    @Override
    public void open(OpenContext context) {
        partials = getRuntimeContext().getListState(
                new ListStateDescriptor<>("partials", byte[].class));
    }

    @Override
    public void processElement(Row row, Context ctx, Collector<Row> out) throws Exception {
        long close = ((Number) row.getField(1)).longValue();
        byte[] state = (byte[]) row.getField(2);
        if (close <= ctx.timerService().currentWatermark()) {
            out.collect(Row.of(ctx.getCurrentKey(), true, Frames.frame(List.of(state), true)));
            return;
        }
        partials.add(state);
        ctx.timerService().registerEventTimeTimer(close); // the same timer again is a no-op
    }

    @Override
    public void onTimer(long timestamp, OnTimerContext ctx, Collector<Row> out) throws Exception {
        Iterable<byte[]> states = partials.get();
        if (states != null && states.iterator().hasNext()) {
            out.collect(Row.of(ctx.getCurrentKey(), false, Frames.frame(states, true)));
        }
        partials.clear();
    }
}
