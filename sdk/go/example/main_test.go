package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/sdk/go/internal/testserver"
)

func TestExampleOpensAndStops(t *testing.T) {
	srv := testserver.Start(t)
	srv.AssignMemoryResource("staging-db")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var out bytes.Buffer
	err := run(ctx, []string{"-addr", srv.Addr, "-insecure", "-ipv4", "203.0.113.9", "-stop"}, srv.AdminKey, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"SESSION_STATUS_ACTIVE", "staging-db 203.0.113.9 RESOURCE_IP_STATUS_APPLIED", "open until"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the output lacks %q:\n%s", want, out.String())
		}
	}

	// Stopped, so the same address can start again.
	if err := run(ctx, []string{"-addr", srv.Addr, "-insecure", "-ipv4", "203.0.113.9", "-stop"}, srv.AdminKey, &out); err != nil {
		t.Fatalf("a second run after -stop: %v", err)
	}
	if err := run(ctx, []string{"-addr", srv.Addr, "-insecure"}, "", &out); err == nil || !strings.Contains(err.Error(), "PORTCULLIS_API_KEY") {
		t.Fatalf("without a key the example says what to set, got %v", err)
	}
}
