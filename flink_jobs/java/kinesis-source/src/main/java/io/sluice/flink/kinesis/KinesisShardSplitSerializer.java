package io.sluice.flink.kinesis;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import org.apache.flink.core.io.SimpleVersionedSerializer;

/** Versioned binary form of a split (version 1); a version it does not know is an error. */
public final class KinesisShardSplitSerializer implements SimpleVersionedSerializer<KinesisShardSplit> {
    static final int VERSION = 1;

    @Override
    public int getVersion() {
        return VERSION;
    }

    @Override
    public byte[] serialize(KinesisShardSplit split) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            write(split, out);
        }
        return bytes.toByteArray();
    }

    @Override
    public KinesisShardSplit deserialize(int version, byte[] serialized) throws IOException {
        if (version != VERSION) {
            throw new IOException("unknown Kinesis split serializer version " + version);
        }
        try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(serialized))) {
            return read(in);
        }
    }

    static void write(KinesisShardSplit split, DataOutputStream out) throws IOException {
        out.writeUTF(split.shardId);
        out.writeInt(split.parentShardIds.size());
        for (String parent : split.parentShardIds) {
            out.writeUTF(parent);
        }
        out.writeUTF(split.startPosition.name());
        out.writeLong(split.startTimestampMillis);
        out.writeBoolean(split.lastSequenceNumber != null);
        if (split.lastSequenceNumber != null) {
            out.writeUTF(split.lastSequenceNumber);
        }
        out.writeBoolean(split.finishedMarker);
    }

    static KinesisShardSplit read(DataInputStream in) throws IOException {
        String shardId = in.readUTF();
        int parents = in.readInt();
        List<String> parentIds = new ArrayList<>(parents);
        for (int i = 0; i < parents; i++) {
            parentIds.add(in.readUTF());
        }
        StartPosition position = StartPosition.valueOf(in.readUTF());
        long timestamp = in.readLong();
        String sequence = in.readBoolean() ? in.readUTF() : null;
        boolean finished = in.readBoolean();
        return new KinesisShardSplit(shardId, parentIds, position, timestamp, sequence, finished);
    }
}
