// Package backends owns result storage in Celery's exact format: the
// Redis result backend (celery-task-meta-<id> documents written with SETEX
// and PUBLISH on the channel of the same name, so Python's
// AsyncResult.get() wakes at once), the exception documents Python
// rebuilds, and the chord counters.
package backends
