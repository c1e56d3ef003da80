package io.sluice.flink.kinesis;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.Set;
import java.util.TreeSet;
import org.apache.flink.core.io.SimpleVersionedSerializer;

/** Versioned binary form of the enumerator's state (version 1), shard ids in sorted order. */
public final class KinesisEnumeratorStateSerializer
        implements SimpleVersionedSerializer<KinesisEnumeratorState> {
    static final int VERSION = 1;

    @Override
    public int getVersion() {
        return VERSION;
    }

    @Override
    public byte[] serialize(KinesisEnumeratorState state) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            writeSet(state.assignedShards, out);
            writeSet(state.finishedShards, out);
            out.writeBoolean(state.initialDiscoveryDone);
            writeSet(state.initialShards, out);
        }
        return bytes.toByteArray();
    }

    @Override
    public KinesisEnumeratorState deserialize(int version, byte[] serialized) throws IOException {
        if (version != VERSION) {
            throw new IOException("unknown Kinesis enumerator state version " + version);
        }
        try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(serialized))) {
            Set<String> assigned = readSet(in);
            Set<String> finished = readSet(in);
            boolean initialDone = in.readBoolean();
            Set<String> initial = readSet(in);
            return new KinesisEnumeratorState(assigned, finished, initialDone, initial);
        }
    }

    private static void writeSet(Set<String> values, DataOutputStream out) throws IOException {
        out.writeInt(values.size());
        for (String value : new TreeSet<>(values)) {
            out.writeUTF(value);
        }
    }

    private static Set<String> readSet(DataInputStream in) throws IOException {
        int size = in.readInt();
        Set<String> values = new TreeSet<>();
        for (int i = 0; i < size; i++) {
            values.add(in.readUTF());
        }
        return values;
    }
}
