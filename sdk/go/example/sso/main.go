// Command sso logs in through the organization's identity provider, as `pcl login --sso`
// does: it prints the URL to open in a browser (on any machine), waits until the provider has
// sent that browser back to the server, then calls the API with the login's access token.
//
//	go run ./example/sso -addr localhost:50051 -insecure -organization ORG_ID
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
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sso:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	flags := flag.NewFlagSet("sso", flag.ContinueOnError)
	addr := flags.String("addr", "localhost:50051", "server address")
	plaintext := flags.Bool("insecure", false, "connect without TLS (a local server)")
	organization := flags.String("organization", "", "the organization whose identity provider to log in through")
	email := flags.String("email", "", "or: your email, whose domain picks the provider")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if (*organization == "") == (*email == "") {
		return errors.New("give -organization or -email")
	}
	var opts []portcullis.Option
	if *plaintext {
		opts = append(opts, portcullis.WithInsecure())
	}
	// Starting and waiting for a login need no credential.
	client, err := portcullis.Dial(*addr, opts...)
	if err != nil {
		return err
	}
	defer client.Close()
	login, err := ssoLogin(ctx, client.Auth, &portcullisv1.StartSsoLoginRequest{OrganizationId: *organization, Email: *email},
		func(url string) { fmt.Fprintf(out, "To log in, open this URL in a browser:\n\n  %s\n\n", url) })
	if err != nil {
		return err
	}

	// The token authenticates calls until it expires (ExtendLoginSession renews it).
	authed, err := portcullis.Dial(*addr, append(opts, portcullis.WithBearerToken(login.GetAccessToken()))...)
	if err != nil {
		return err
	}
	defer authed.Close()
	current, err := authed.Auth.GetCurrentLogin(ctx, &portcullisv1.GetCurrentLoginRequest{})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "logged in as %s, groups %v; the token expires at %s\n",
		current.GetAlias(), current.GetGroups(), login.GetExpiresAt().AsTime().Format("15:04:05 MST"))
	return nil
}

// ssoLogin starts a login, shows its URL, and waits for the browser to come back: the answer is
// VerifyLogin's, or the error says why the provider's login gave no access here.
func ssoLogin(ctx context.Context, auth portcullisv1.AuthServiceClient, start *portcullisv1.StartSsoLoginRequest,
	show func(url string)) (*portcullisv1.VerifyLoginResponse, error) {
	started, err := auth.StartSsoLogin(ctx, start)
	if err != nil {
		return nil, err
	}
	show(started.GetAuthorizationUrl())
	stream, err := auth.WaitSsoLogin(ctx, &portcullisv1.WaitSsoLoginRequest{
		SsoLoginId: started.GetSsoLoginId(), PollSecret: started.GetPollSecret(),
	})
	if err != nil {
		return nil, err
	}
	for {
		step, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if step.GetState() == portcullisv1.SsoLoginState_SSO_LOGIN_STATE_DONE {
			return step.GetLogin(), nil
		}
	}
}
