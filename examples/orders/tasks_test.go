package main

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/celeryworker/gocelery/tasks"
)

func TestTotal(t *testing.T) {
	got, err := Total(context.Background(), []Line{{"a", 2, 150}, {"b", 1, 99}}, "eur")
	if err != nil {
		t.Fatal(err)
	}
	if want := (OrderTotal{Lines: 2, Units: 3, TotalCents: 399, Currency: "EUR"}); got != want {
		t.Fatalf("Total = %+v, want %+v", got, want)
	}
	_, err = Total(context.Background(), []Line{{"a", 0, 150}}, "EUR")
	if pe, ok := tasks.AsPyError(err); !ok || pe.Type != "ValueError" {
		t.Fatalf("zero quantity: %v, want ValueError", err)
	}
}

func TestExportRetriesWhileBusy(t *testing.T) {
	ctx := tasks.WithRequest(context.Background(), &tasks.Request{ID: "t1", Retries: 0})
	_, err := Export(ctx, []int64{1}, 1)
	var re *tasks.RetryError
	if !errors.As(err, &re) {
		t.Fatalf("busy storage: %v, want a retry", err)
	}
	var states []any
	ctx = tasks.WithRequest(context.Background(), &tasks.Request{ID: "t1", Retries: 1,
		UpdateStateFunc: func(_ context.Context, state string, meta any) error { states = append(states, meta); return nil }})
	out, err := Export(ctx, []int64{7, 8}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(out["path"].(string))
	if len(states) != 2 || out["orders"] != 2 || out["attempts"] != 2 {
		t.Fatalf("out %v, progress %v", out, states)
	}
}
