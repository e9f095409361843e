package main

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/sdk/go/internal/testserver"
)

func TestSSOLoginWaitsForTheBrowserAndUsesTheToken(t *testing.T) {
	srv, dex := testserver.StartSSO(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	organization := srv.OrganizationID(t)

	output, written := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", srv.Addr, "-insecure", "-organization", organization}, written)
		written.Close()
	}()
	lines := bufio.NewScanner(output)
	var printed []string
	for lines.Scan() {
		line := strings.TrimSpace(lines.Text())
		printed = append(printed, line)
		if strings.HasPrefix(line, "http") {
			if status := dex.LogIn(t, line); status != 200 {
				t.Fatalf("the callback page answered %d", status)
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("%v\n%s", err, strings.Join(printed, "\n"))
	}
	if last := printed[len(printed)-1]; !strings.Contains(last, "logged in as admin@example.com, groups [ops]") {
		t.Fatalf("the example printed:\n%s", strings.Join(printed, "\n"))
	}
	if err := run(ctx, []string{"-addr", srv.Addr, "-insecure"}, io.Discard); err == nil {
		t.Fatal("without -organization or -email the example says what to give")
	}
}
