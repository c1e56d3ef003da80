"""IoT edge Lambda: API Gateway HTTP API requests with device readings in, Kinesis envelopes out."""
