package io.sluice.flink.ops;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;

/**
 * The byte layout the Python side of the job reads (``flink_jobs.app.frames``), big-endian: a
 * frame is an int count, then that many items. A record item is the sequence number (int length +
 * UTF-8), the sub-sequence number (int; -1: a whole Kinesis record, possibly a KPL aggregate),
 * the arrival time (double, epoch seconds) and the data (int length + bytes). A state item is an
 * int length + bytes.
 */
final class Frames {
    private Frames() {}

    static byte[] record(String sequence, int sub, double arrivalSeconds, byte[] data) {
        byte[] seq = sequence.getBytes(StandardCharsets.UTF_8);
        ByteArrayOutputStream bytes = new ByteArrayOutputStream(seq.length + data.length + 20);
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            out.writeInt(seq.length);
            out.write(seq);
            out.writeInt(sub);
            out.writeDouble(arrivalSeconds);
            out.writeInt(data.length);
            out.write(data);
        } catch (IOException impossible) {
            throw new UncheckedIOException(impossible);
        }
        return bytes.toByteArray();
    }

    /** ``items`` as one frame; {@code prefixLengths}: each item as int length + bytes (states),
     * else as they are (records, which carry their own lengths). */
    static byte[] frame(Iterable<byte[]> items, boolean prefixLengths) {
        int count = 0;
        int size = 4;
        for (byte[] item : items) {
            count++;
            size += item.length + (prefixLengths ? 4 : 0);
        }
        ByteArrayOutputStream bytes = new ByteArrayOutputStream(size);
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            out.writeInt(count);
            for (byte[] item : items) {
                if (prefixLengths) {
                    out.writeInt(item.length);
                }
                out.write(item);
            }
        } catch (IOException impossible) {
            throw new UncheckedIOException(impossible);
        }
        return bytes.toByteArray();
    }
}
