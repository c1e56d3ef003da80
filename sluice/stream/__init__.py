"""What travels on Kinesis and what the job does to it: envelopes, KPL, the engine-neutral stages."""
