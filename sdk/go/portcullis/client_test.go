package portcullis_test

import (
	"context"
	"crypto/tls"
	"errors"
	"iter"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	portcullisv1 "github.com/portcullis/portcullis/sdk/go/gen/portcullis/v1"
	"github.com/portcullis/portcullis/sdk/go/internal/testserver"
	"github.com/portcullis/portcullis/sdk/go/portcullis"
)

const address = "203.0.113.7"

func dial(t *testing.T, srv *testserver.Server, opts ...portcullis.Option) *portcullis.Client {
	t.Helper()
	opts = append([]portcullis.Option{
		portcullis.WithInsecure(),
		portcullis.WithWatchBackoff(portcullis.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond}),
		// Reconnect to a restarted server quickly rather than after grpc's default second.
		portcullis.WithDialOptions(grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, MaxDelay: 500 * time.Millisecond},
		})),
	}, opts...)
	client, err := portcullis.Dial(srv.Addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

// startAsAdmin starts a server whose admin has a memory resource, and dials it as the admin.
func startAsAdmin(t *testing.T) (*testserver.Server, *portcullis.Client, context.Context) {
	srv := testserver.Start(t)
	srv.AssignMemoryResource("staging-db")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return srv, dial(t, srv, portcullis.WithAPIKey(srv.AdminKey)), ctx
}

func startSession(ctx context.Context, t *testing.T, client *portcullis.Client) *portcullisv1.Session {
	t.Helper()
	resp, err := client.Sessions.StartSession(ctx, &portcullisv1.StartSessionRequest{
		Ipv4Address:   new(address),
		DurationHours: new(uint32(1)),
	})
	if err != nil {
		t.Fatalf("start session: %v", err)
	}
	return resp.GetSession()
}

// next pulls states until one has the wanted status, failing on an error, an end or a terminal
// state that is not the one wanted.
func next(t *testing.T, pull func() (*portcullisv1.Session, error, bool), want portcullisv1.SessionStatus) *portcullisv1.Session {
	t.Helper()
	for {
		session, err, ok := pull()
		switch {
		case !ok:
			t.Fatalf("the watch ended before %s", want)
		case err != nil:
			t.Fatalf("watch: %v", err)
		case session.GetStatus() == want:
			return session
		case portcullis.IsTerminal(session.GetStatus()):
			t.Fatalf("the session ended %s, waiting for %s", session.GetStatus(), want)
		}
	}
}

func TestSessionLifecycle(t *testing.T) {
	_, client, ctx := startAsAdmin(t)

	session := startSession(ctx, t, client)
	if session.GetStatus() != portcullisv1.SessionStatus_SESSION_STATUS_PENDING || len(session.GetResourceIps()) != 1 {
		t.Fatalf("a new session is PENDING with one rule, got %v", session)
	}

	pull, stop := iter.Pull2(client.WatchSession(ctx, session.GetId()))
	active := next(t, pull, portcullisv1.SessionStatus_SESSION_STATUS_ACTIVE)
	stop()
	rule := active.GetResourceIps()[0]
	if rule.GetStatus() != portcullisv1.ResourceIpStatus_RESOURCE_IP_STATUS_APPLIED || rule.GetResourceName() != "staging-db" {
		t.Fatalf("an ACTIVE session has its rule applied, got %v", rule)
	}

	stopped, err := client.Sessions.StopSession(ctx, &portcullisv1.StopSessionRequest{Id: session.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if stopped.GetSession().GetEndedReason() != portcullisv1.EndedReason_ENDED_REASON_MANUAL {
		t.Fatalf("the owner's stop is MANUAL, got %v", stopped.GetSession().GetEndedReason())
	}

	// A fresh watch starts from the current state and ends by itself after CANCELLED.
	var last *portcullisv1.Session
	var previous uint64
	for s, err := range client.WatchSession(ctx, session.GetId()) {
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if s.GetRevision() <= previous {
			t.Fatalf("revisions go forward: %d after %d", s.GetRevision(), previous)
		}
		previous, last = s.GetRevision(), s
	}
	if last.GetStatus() != portcullisv1.SessionStatus_SESSION_STATUS_CANCELLED {
		t.Fatalf("the watch ends with CANCELLED, got %v", last.GetStatus())
	}
	if rule := last.GetResourceIps()[0]; rule.GetStatus() != portcullisv1.ResourceIpStatus_RESOURCE_IP_STATUS_REMOVED {
		t.Fatalf("a CANCELLED session's rule is removed, got %v", rule.GetStatus())
	}
}

func TestWatchSessionReconnectsAcrossARestart(t *testing.T) {
	srv, client, ctx := startAsAdmin(t)
	session := startSession(ctx, t, client)

	pull, stop := iter.Pull2(client.WatchSession(ctx, session.GetId()))
	defer stop()
	active := next(t, pull, portcullisv1.SessionStatus_SESSION_STATUS_ACTIVE)

	srv.Restart()
	// The next state is awaited in the background, so the watch notices the broken stream and
	// reconnects now; the server then resends ACTIVE, which must not be yielded a second time.
	type pulled struct {
		session *portcullisv1.Session
		err     error
		ok      bool
	}
	afterRestart := make(chan pulled, 1)
	go func() {
		session, err, ok := pull()
		afterRestart <- pulled{session, err, ok}
	}()
	time.Sleep(time.Second) // reconnection takes well under this with the test's backoff
	if _, err := client.Sessions.StopSession(ctx, &portcullisv1.StopSessionRequest{Id: session.GetId()}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}

	previous, last := active.GetRevision(), (*portcullisv1.Session)(nil)
	for state := <-afterRestart; state.ok; {
		if state.err != nil {
			t.Fatalf("watch: %v", state.err)
		}
		if state.session.GetRevision() <= previous {
			t.Fatalf("revision %d (%s) yielded after %d", state.session.GetRevision(), state.session.GetStatus(), previous)
		}
		previous, last = state.session.GetRevision(), state.session
		state.session, state.err, state.ok = pull()
	}
	if last.GetStatus() != portcullisv1.SessionStatus_SESSION_STATUS_CANCELLED {
		t.Fatalf("the watch ends with CANCELLED, got %v", last)
	}
}

func TestErrorsCarryCodeAndReason(t *testing.T) {
	srv, client, ctx := startAsAdmin(t)

	anonymous := dial(t, srv)
	_, err := anonymous.Sessions.ListSessions(ctx, &portcullisv1.ListSessionsRequest{})
	var perr *portcullis.Error
	if !errors.As(err, &perr) || perr.Code != codes.Unauthenticated || perr.Reason != "ERROR_REASON_MISSING_CREDENTIALS" {
		t.Fatalf("no credentials: want Unauthenticated/MISSING_CREDENTIALS, got %v", err)
	}

	forged := dial(t, srv, portcullis.WithAPIKey("pcl_not-a-real-key"))
	_, err = forged.Sessions.ListSessions(ctx, &portcullisv1.ListSessionsRequest{})
	if !portcullis.HasReason(err, portcullisv1.ErrorReason_ERROR_REASON_INVALID_CREDENTIALS) {
		t.Fatalf("unknown key: want INVALID_CREDENTIALS, got %v", err)
	}

	startSession(ctx, t, client)
	_, err = client.Sessions.StartSession(ctx, &portcullisv1.StartSessionRequest{Ipv4Address: new(address)})
	if portcullis.Code(err) != codes.AlreadyExists || status.Code(err) != codes.AlreadyExists ||
		!portcullis.HasReason(err, portcullisv1.ErrorReason_ERROR_REASON_SESSION_ALREADY_ACTIVE) {
		t.Fatalf("same address twice: want AlreadyExists/SESSION_ALREADY_ACTIVE, got %v", err)
	}

	_, err = client.Resources.CreateResource(ctx, &portcullisv1.CreateResourceRequest{Resource: &portcullisv1.Resource{
		Provider: &portcullisv1.Resource_Memory{Memory: &portcullisv1.MemoryProvider{}},
	}})
	if !errors.As(err, &perr) || perr.Code != codes.InvalidArgument || perr.ErrorReason() != portcullisv1.ErrorReason_ERROR_REASON_INVALID_INPUT {
		t.Fatalf("nameless resource: want InvalidArgument/INVALID_INPUT, got %v", err)
	}
	if len(perr.FieldViolations) == 0 || perr.FieldViolations[0].Field != "resource.name" {
		t.Fatalf("the BadRequest names resource.name, got %+v", perr.FieldViolations)
	}

	// A watch of a session that does not exist fails once, with the server's answer.
	var watchErr error
	for _, err := range client.WatchSession(ctx, "0190b8a0-0000-7000-8000-000000000000") {
		watchErr = err
	}
	if portcullis.Code(watchErr) != codes.NotFound {
		t.Fatalf("watching an unknown session: want NotFound, got %v", watchErr)
	}
}

func TestDialRefusesAnEmptyCredential(t *testing.T) {
	if _, err := portcullis.Dial("localhost:1", portcullis.WithBearerToken("")); err == nil {
		t.Fatal("an empty bearer token is a configuration mistake, not an anonymous client")
	}
}

func TestCredentialsAreNotSentInPlaintextUnlessAskedTo(t *testing.T) {
	srv, _, ctx := startAsAdmin(t)
	// A plaintext transport slipped in through raw dial options, without WithInsecure.
	_, err := portcullis.Dial(srv.Addr, portcullis.WithAPIKey(srv.AdminKey),
		portcullis.WithDialOptions(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err == nil || !strings.Contains(err.Error(), "transport level security") {
		t.Fatalf("an API key must not go out over plaintext, got %v", err)
	}
	// TLS is the default: a plaintext server never sees the key either.
	tlsClient, err := portcullis.Dial(srv.Addr, portcullis.WithAPIKey(srv.AdminKey))
	if err != nil {
		t.Fatal(err)
	}
	defer tlsClient.Close()
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := tlsClient.Sessions.ListSessions(short, &portcullisv1.ListSessionsRequest{}); portcullis.Code(err) != codes.Unavailable {
		t.Fatalf("a TLS client against a plaintext server: want Unavailable, got %v", err)
	}
}

// TestTLS talks to a server that speaks TLS only: with its CA the whole session API works;
// a plaintext client gets nowhere.
func TestTLS(t *testing.T) {
	srv := testserver.StartTLS(t)
	ctx := context.Background()
	client, err := portcullis.Dial(srv.Addr, portcullis.WithAPIKey(srv.AdminKey),
		portcullis.WithTLS(&tls.Config{RootCAs: srv.RootCAs, ServerName: "localhost", MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	me, err := client.Users.GetCurrentUser(ctx, &portcullisv1.GetCurrentUserRequest{})
	if err != nil {
		t.Fatalf("over TLS: %v", err)
	}
	if me.GetUser().GetEmail() != "admin@example.com" {
		t.Fatalf("over TLS: %v", me)
	}
	plain, err := portcullis.Dial(srv.Addr, portcullis.WithAPIKey(srv.AdminKey), portcullis.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := plain.Users.GetCurrentUser(short, &portcullisv1.GetCurrentUserRequest{}); err == nil {
		t.Fatal("a plaintext client must not get through to a TLS server")
	}
}

func TestASessionOnAResourceThatNeedsApprovalWaitsForIt(t *testing.T) {
	srv, client, ctx := startAsAdmin(t)
	// A second admin, so that someone other than the requester may approve.
	if _, err := client.Users.CreateUser(ctx, &portcullisv1.CreateUserRequest{User: &portcullisv1.User{
		Email: "grace@example.com", Role: portcullisv1.Role_ROLE_ADMIN,
	}}); err != nil {
		t.Fatal(err)
	}
	listed, err := client.Resources.ListResources(ctx, &portcullisv1.ListResourcesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Resources.UpdateResource(ctx, &portcullisv1.UpdateResourceRequest{
		Resource: &portcullisv1.Resource{
			Id:       listed.GetResources()[0].GetId(),
			Approval: &portcullisv1.ApprovalPolicy{Required: true},
		},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"approval"}},
	}); err != nil {
		t.Fatal(err)
	}

	session := startSession(ctx, t, client)
	if session.GetStatus() != portcullisv1.SessionStatus_SESSION_STATUS_AWAITING_APPROVAL || session.GetApproval().GetRequired() != 1 {
		t.Fatalf("the session waits for one approval, got %v", session)
	}
	_, err = client.Approvals.ApproveSession(ctx, &portcullisv1.ApproveSessionRequest{Id: session.GetId()})
	if portcullis.Code(err) != codes.PermissionDenied {
		t.Fatalf("a requester never approves their own session, got %v", err)
	}

	// The other admin finds it in their inbox and approves it: it opens.
	grace := dial(t, srv, portcullis.WithBearerToken(srv.LogIn(t, "grace@example.com")))
	inbox, err := grace.Approvals.ListApprovalRequests(ctx, &portcullisv1.ListApprovalRequestsRequest{})
	if err != nil || len(inbox.GetSessions()) != 1 || inbox.GetSessions()[0].GetId() != session.GetId() {
		t.Fatalf("the approver's inbox holds the session, got %v %v", inbox, err)
	}
	approved, err := grace.Approvals.ApproveSession(ctx, &portcullisv1.ApproveSessionRequest{Id: session.GetId(), Reason: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	decisions := approved.GetSession().GetApproval().GetDecisions()
	if len(decisions) != 1 || decisions[0].GetUserEmail() != "grace@example.com" {
		t.Fatalf("the decision is recorded, got %v", approved.GetSession().GetApproval())
	}
	pull, stop := iter.Pull2(client.WatchSession(ctx, session.GetId()))
	next(t, pull, portcullisv1.SessionStatus_SESSION_STATUS_ACTIVE)
	stop()
}
