package broker

import (
	"errors"
	"fmt"
	"testing"
)

func TestMisconfiguredKeepsTextAndChain(t *testing.T) {
	base := errors.New("refused")
	err := Misconfigured(fmt.Errorf("login: %w", base))
	if err.Error() != "login: refused" {
		t.Errorf("text changed: %q", err)
	}
	if !errors.Is(err, ErrMisconfigured) || !errors.Is(err, base) {
		t.Errorf("chain lost: Is(ErrMisconfigured)=%v Is(base)=%v", errors.Is(err, ErrMisconfigured), errors.Is(err, base))
	}
	if Misconfigured(nil) != nil {
		t.Error("Misconfigured(nil) != nil")
	}
	if errors.Is(fmt.Errorf("x: %w", base), ErrMisconfigured) {
		t.Error("a plain error is not misconfigured")
	}
}
