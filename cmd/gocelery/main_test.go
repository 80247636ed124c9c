package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestTasksCommand(t *testing.T) {
	p, err := program()
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := p.Run(context.Background(), []string{"tasks"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, name := range []string{"gocelery.add", "gocelery.echo", "gocelery.sleep", "gocelery.fail", "gocelery.flaky",
		"gocelery.progress", "gocelery.xsum", "gocelery.noop", "gocelery.request", "gocelery.limited", "gocelery.autoretry"} {
		if !strings.Contains(out.String(), name+"\n") {
			t.Errorf("tasks output lacks %s", name)
		}
	}
	out.Reset()
	if code := p.Run(context.Background(), []string{"version"}, &out, &errb); code != 0 || out.String() != "gocelery dev\n" {
		t.Errorf("version: exit %d, %q", code, out.String())
	}
	if code := p.Run(context.Background(), []string{"bogus"}, &out, &errb); code != 2 {
		t.Errorf("unknown command exit = %d, want 2", code)
	}
}
