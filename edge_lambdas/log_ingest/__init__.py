"""Web-log edge Lambda: S3 access-log files and CloudWatch Logs subscriptions in, Kinesis out."""
