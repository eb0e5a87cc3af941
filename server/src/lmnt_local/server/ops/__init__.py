"""Operating the server: connection guard, per-key limits, health and readiness, metrics, logs,
workers and their supervisor, and running until a signal drains it."""
