package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/celeryworker/gocelery/tasks"
)

// Line is one order line as the Python side sends it: a dict with these
// keys. Amounts are integer cents, so no float rounding creeps in.
type Line struct {
	SKU        string `json:"sku"`
	Quantity   int64  `json:"qty"`
	PriceCents int64  `json:"price_cents"`
}

// OrderTotal is what orders.total returns; Python receives it as a dict.
type OrderTotal struct {
	Lines      int    `json:"lines"`
	Units      int64  `json:"units"`
	TotalCents int64  `json:"total_cents"`
	Currency   string `json:"currency"`
}

// Total prices an order: a plain function whose arguments are bound from
// the message by name. Bad input is a ValueError in Python.
func Total(ctx context.Context, lines []Line, currency string) (OrderTotal, error) {
	if len(currency) != 3 {
		return OrderTotal{}, tasks.ValueError("currency must be an ISO 4217 code, got %q", currency)
	}
	out := OrderTotal{Lines: len(lines), Currency: strings.ToUpper(currency)}
	for i, l := range lines {
		if l.Quantity <= 0 {
			return OrderTotal{}, tasks.ValueError("line %d (%s): quantity must be positive, got %d", i+1, l.SKU, l.Quantity)
		}
		out.Units += l.Quantity
		out.TotalCents += l.Quantity * l.PriceCents
	}
	tasks.Logger(ctx).Info().Msgf("priced %d lines: %d %s cents", out.Lines, out.TotalCents, out.Currency)
	return out, nil
}

// errStorageBusy is what the report store answers while it is busy; it is
// raised in Python as the builtin ConnectionError.
var errStorageBusy = tasks.NewPyError("ConnectionError", "report storage is busy")

// Export writes a CSV report of the orders. It is a bound task in Celery's
// sense: it reads its request (retries, id), reports PROGRESS after each
// order, and retries in a moment while the storage is busy (simulated by
// busyRetries: the first busyRetries attempts find it busy). It honours
// cancellation: a time limit or revoke(terminate=True) stops it between
// orders.
func Export(ctx context.Context, orderIDs []int64, busyRetries int) (map[string]any, error) {
	req, _ := tasks.RequestFromContext(ctx)
	if req.Retries < busyRetries {
		tasks.Logger(ctx).Warn().Int("retries", req.Retries).Msg("storage busy; retrying")
		return nil, tasks.Retry(tasks.Countdown(200*time.Millisecond), tasks.Exc(errStorageBusy))
	}
	var b strings.Builder
	b.WriteString("order_id,status\n")
	for i, id := range orderIDs {
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(50 * time.Millisecond): // the slow part: fetching the order
		}
		fmt.Fprintf(&b, "%d,exported\n", id)
		if err := tasks.UpdateState(ctx, "PROGRESS", map[string]any{"current": i + 1, "total": len(orderIDs)}); err != nil {
			return nil, err
		}
	}
	path := filepath.Join(os.TempDir(), "orders-export-"+req.ID+".csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return nil, fmt.Errorf("write report: %w", err)
	}
	sum := sha256.Sum256([]byte(b.String()))
	return map[string]any{"path": path, "orders": len(orderIDs), "sha256": hex.EncodeToString(sum[:]),
		"attempts": req.Retries + 1}, nil
}
