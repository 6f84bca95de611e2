package errcode

import (
	"fmt"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
)

func TestOf_WrappedErrorKeepsItsCode(t *testing.T) {
	err := fmt.Errorf("loading computer: %w", New(NotFound, "computer %q not found", "x"))
	if got := Of(err); got != NotFound {
		t.Fatalf("Of = %q, want not_found", got)
	}
	if got := Message(err); got != `computer "x" not found` {
		t.Fatalf("Message = %q", got)
	}
	if HTTPStatus(err) != http.StatusNotFound || GRPCCode(err) != codes.NotFound {
		t.Fatalf("status mapping wrong: %d %v", HTTPStatus(err), GRPCCode(err))
	}
}

func TestOf_PlainErrorIsInternalAndHidden(t *testing.T) {
	err := fmt.Errorf("sql: connection refused at 10.0.0.1")
	if Of(err) != Internal || Message(err) != "internal error" || HTTPStatus(err) != 500 {
		t.Fatalf("plain error leaked or misclassified: %q %q %d", Of(err), Message(err), HTTPStatus(err))
	}
	if Of(nil) != "" {
		t.Fatal("nil error has a code")
	}
}

func TestEveryCodeRoundTripsThroughHTTP(t *testing.T) {
	for c, m := range statuses {
		if c == TooLarge || c == TooManyRequests {
			continue // share gRPC code; HTTP is distinct
		}
		if got := FromHTTP(m.http); got != c {
			t.Errorf("FromHTTP(%d) = %q, want %q", m.http, got, c)
		}
		if c != Internal && FromGRPC(m.grpc) != c {
			t.Errorf("FromGRPC(%v) = %q, want %q", m.grpc, FromGRPC(m.grpc), c)
		}
	}
}
