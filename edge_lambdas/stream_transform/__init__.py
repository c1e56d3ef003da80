"""Transform Lambda: Kinesis batches (event source mapping) in, the six tables out, exactly once."""
