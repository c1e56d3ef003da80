"""A PyFlink job for the Kinesis source tests: Sluice's Kinesis source -> one text line per record
-> a FileSink whose part files are committed on checkpoints (exactly-once output). Parallelism 1, so
the committed files, in part order, are the order the source emitted the records in. Checkpointing
comes from the cluster's config.yaml.

Arguments: STREAM ENDPOINT OUT_DIR JAR
Line: shard_id TAB sequence_number TAB arrival_millis TAB base64(data)
"""

import base64
import sys

from pyflink.common import Encoder, Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import (
    BucketAssigner,
    FileSink,
    OutputFileConfig,
    RollingPolicy,
)

from flink_jobs.kinesis_source import read_kinesis
from sluice.stream.kinesis.settings import KinesisReadSettings

stream, endpoint, out_dir, jar = sys.argv[1:5]

env = StreamExecutionEnvironment.get_execution_environment()
env.add_jars(f"file://{jar}")
env.set_parallelism(1)
settings = KinesisReadSettings(
    stream_name=stream,
    region_name="us-east-1",
    max_records_per_call=100,
    poll_interval_seconds=0.3,
    discovery_interval_seconds=1.0,
)
rows = read_kinesis(
    env, settings, endpoint=endpoint, access_key_id="testing", secret_access_key="testing"
)


def to_line(row):
    data = base64.b64encode(row.data).decode()
    return f"{row.shard_id}\t{row.sequence_number}\t{row.arrival_millis}\t{data}"


lines = rows.map(to_line, output_type=Types.STRING())
lines.sink_to(
    FileSink.for_row_format(out_dir, Encoder.simple_string_encoder())
    .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
    .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy())
    .with_output_file_config(OutputFileConfig.builder().with_part_prefix("part").build())
    .build()
).uid("WriteLines")
env.execute("sluice-test-kinesis-to-files")
