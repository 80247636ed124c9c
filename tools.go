//go:build tools

package tools

import (
	_ "github.com/rabbitmq/amqp091-go"
	_ "github.com/redis/go-redis/v9"
	_ "github.com/rs/zerolog"
	_ "github.com/vmihailenco/msgpack/v5"
)
