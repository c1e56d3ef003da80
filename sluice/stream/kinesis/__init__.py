"""Reading a Kinesis data stream without an engine or an AWS SDK: what any runtime's source reuses.

``records``: the elements a read emits (``SourceBatch`` of ``SourceRecord``). ``positions``: where
reading starts (``StartPosition``) and the restriction a runtime checkpoints (``StreamRestriction``,
claimed with ``ShardClaim`` / ``STOP_READING``). ``settings``: ``KinesisReadSettings``. ``shards``:
resharding and watermark rules. ``failures``: what a failed call means (``failure_kind``,
``KinesisReadError``). ``reader``: ``KinesisStreamReader``, which polls the shards in rounds.

The Beam job's source (``beam_jobs.read_kinesis``) wraps these in a splittable DoFn and hands the
reader a boto3 client and botocore's exception types (``beam_jobs.kinesis_client``).
"""
