"""Feed poller edge: EventBridge Scheduler -> Lambda -> poll JSON APIs -> Kinesis.

``handler.lambda_handler`` is the Lambda entry point; ``local.main`` runs one poll from a shell;
``checkpoints.DynamoDbCheckpointStore`` keeps leases and checkpoints; ``settings`` is the typed
configuration. The polling logic itself is the package ``sluice.edges.polling``.
"""
