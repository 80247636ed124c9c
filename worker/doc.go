// Package worker owns the task loop: it consumes deliveries, decodes them,
// holds ETA tasks, applies rate limits, executes tasks under a concurrency
// bound with time limits, records results, acknowledges in Celery's order,
// retries, and shuts down without losing a message.
package worker
