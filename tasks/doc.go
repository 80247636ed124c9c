// Package tasks is the Go task API: a Registry of named tasks, binding of a
// Celery message's args and kwargs to Go function parameters, per-task
// options (retries, time and rate limits, acks_late), the request context a
// running task reads, and the errors a task returns to fail with a Python
// exception or to ask for a retry.
package tasks
