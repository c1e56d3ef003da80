"""Raw bytes to contracts: IoT readings, nginx access-log lines, polled JSON feed documents."""
