"""Raw-archive Lambda: Kinesis Data Firehose's transformation of the stream into replayable archive lines."""
