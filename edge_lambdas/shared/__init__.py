"""What the edge Lambdas share: the Kinesis publisher, settings, telemetry and AWS event factories."""
