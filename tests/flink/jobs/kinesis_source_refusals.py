"""Builds Sluice's Kinesis source from Python without and with the shaded jar (argument: the jar) and
prints one line per outcome, for ``test_flink_kinesis_source.py``. No job is run; the last case
lists the shards of an endpoint nothing listens on (the start-up check)."""

import sys

from pyflink.datastream import StreamExecutionEnvironment

from flink_jobs.kinesis_source import KINESIS_ROW, kinesis_source
from sluice.core.errors import ConfigError
from sluice.stream.kinesis.settings import KinesisReadSettings

env = StreamExecutionEnvironment.get_execution_environment()
settings = KinesisReadSettings(stream_name="s", region_name="us-east-1")
try:
    kinesis_source(settings)
except ConfigError as error:
    print(f"no jar: {error}")
env.add_jars(f"file://{sys.argv[1]}")
for kwargs in (
    {"endpoint": "127.0.0.1:1"},
    {"endpoint": "http://127.0.0.1:1", "access_key_id": "a"},
):
    try:
        kinesis_source(settings, **kwargs)
    except ConfigError as error:
        print(f"refused: {error}")
source = kinesis_source(
    settings, endpoint="http://127.0.0.1:1", access_key_id="a", secret_access_key="b", check=False
)
print(f"built: {source.get_java_function().config().toString()}")
print(f"java row type: {source.get_java_function().getProducedType().toString()}")
print(f"python row type: {KINESIS_ROW.get_java_type_info().toString()}")
try:  # the start-up check (check=True, the default): nothing listens on port 1
    kinesis_source(
        settings, endpoint="http://127.0.0.1:1", access_key_id="a", secret_access_key="b"
    )
except ConfigError as error:
    print(f"unreachable: {error}")
