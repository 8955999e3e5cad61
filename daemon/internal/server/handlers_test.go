package server

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/ipc"
)

// A handler that panics is answered as internal, in the version the client spoke, like every
// other answer.
func TestPanickingHandlerIsAnsweredAsInternalInTheClientsVersion(t *testing.T) {
	const action = "test_panic"
	handlers[action] = struct {
		serve   handler
		version int
	}{func(*Server, context.Context, request) *ipc.Message { panic("boom") }, 1}
	defer delete(handlers, action)
	s := &Server{log: zerolog.New(zerolog.NewTestWriter(t))}
	resp := s.handle(t.Context(), ipc.NewMessage(ipc.KeyVersion, "1", ipc.KeyAction, action), nil)
	if ipc.ErrorCode(ipc.AsError(resp)) != ipc.CodeInternal {
		t.Fatalf("answer %v, want code internal", resp.Fields)
	}
	if v := resp.Value(ipc.KeyVersion); v != "1" {
		t.Fatalf("answered in version %q to a version 1 client", v)
	}
}
