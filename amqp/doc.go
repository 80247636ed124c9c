// Package amqp is gocelery's RabbitMQ transport: it reads broker URLs as
// Celery writes them, declares queues exactly as kombu does so Python
// producers and workers share them, consumes with QoS, acknowledges, and
// publishes with publisher confirms. It converts between AMQP deliveries and
// protocol.Envelope; it knows nothing of tasks.
package amqp
