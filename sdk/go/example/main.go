// Command example starts a Portcullis session for this machine's address (or -ipv4) and
// watches it until every rule is applied.
//
//	PORTCULLIS_API_KEY=pcl_… go run ./example -addr localhost:50051 -insecure -ipv4 203.0.113.7
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	portcullisv1 "github.com/portcullis/portcullis/sdk/go/gen/portcullis/v1"
	"github.com/portcullis/portcullis/sdk/go/portcullis"
)

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	if err := run(ctx, os.Args[1:], os.Getenv("PORTCULLIS_API_KEY"), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, apiKey string, out io.Writer) error {
	flags := flag.NewFlagSet("example", flag.ContinueOnError)
	addr := flags.String("addr", "localhost:50051", "server address")
	plaintext := flags.Bool("insecure", false, "connect without TLS (a local server)")
	ipv4 := flags.String("ipv4", "", "address to open (default: the one the server sees)")
	hours := flags.Uint("hours", 1, "session length in hours")
	stop := flags.Bool("stop", false, "stop the session once it is active")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if apiKey == "" {
		return errors.New("set PORTCULLIS_API_KEY")
	}

	opts := []portcullis.Option{portcullis.WithAPIKey(apiKey)}
	if *plaintext {
		opts = append(opts, portcullis.WithInsecure())
	}
	client, err := portcullis.Dial(*addr, opts...)
	if err != nil {
		return err
	}
	defer client.Close()

	request := &portcullisv1.StartSessionRequest{DurationHours: new(uint32(*hours))}
	if *ipv4 != "" {
		request.Ipv4Address = ipv4
	}
	started, err := client.Sessions.StartSession(ctx, request)
	if portcullis.HasReason(err, portcullisv1.ErrorReason_ERROR_REASON_SESSION_ALREADY_ACTIVE) {
		return fmt.Errorf("this address already has a live session: %w", err)
	}
	if err != nil {
		return err
	}
	id := started.GetSession().GetId()
	fmt.Fprintf(out, "session %s started\n", id)

	for session, err := range client.WatchSession(ctx, id) {
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s\n", session.GetStatus())
		for _, rule := range session.GetResourceIps() {
			fmt.Fprintf(out, "  %s %s %s %s\n", rule.GetResourceName(), rule.GetIpAddress(), rule.GetStatus(), rule.GetErrorMessage())
		}
		switch session.GetStatus() {
		case portcullisv1.SessionStatus_SESSION_STATUS_ACTIVE, portcullisv1.SessionStatus_SESSION_STATUS_PARTIAL:
			fmt.Fprintf(out, "open until %s\n", session.GetExpiresAt().AsTime().Local())
			if *stop {
				_, err := client.Sessions.StopSession(ctx, &portcullisv1.StopSessionRequest{Id: id})
				return err
			}
			return nil
		case portcullisv1.SessionStatus_SESSION_STATUS_FAILED:
			return errors.New("every rule failed")
		}
	}
	return errors.New("the session ended before it was active")
}
