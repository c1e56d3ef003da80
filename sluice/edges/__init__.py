"""The edges' logic behind the Lambda handlers: request bodies, delivery planning, feed polling."""
