// Package portcullis is the Go client of the Portcullis just-in-time IP allowlisting service.
//
// Dial returns a Client whose fields are the generated gRPC clients of every service, with the
// caller's credentials attached to each call and failures returned as *Error, which carries the
// gRPC code and the machine-readable ErrorInfo reason:
//
//	client, err := portcullis.Dial("portcullis.example.com:443", portcullis.WithAPIKey(key))
//	...
//	resp, err := client.Sessions.StartSession(ctx, &portcullisv1.StartSessionRequest{})
//	if portcullis.HasReason(err, portcullisv1.ErrorReason_ERROR_REASON_SESSION_ALREADY_ACTIVE) {
//		...
//	}
//	for session, err := range client.WatchSession(ctx, resp.GetSession().GetId()) {
//		...
//	}
package portcullis

import (
	"context"
	"crypto/tls"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	portcullisv1 "github.com/portcullis/portcullis/sdk/go/gen/portcullis/v1"
)

// Client holds one connection to a Portcullis server and a client for each of its services.
type Client struct {
	conn *grpc.ClientConn

	Sessions      portcullisv1.SessionServiceClient
	ResourceIPs   portcullisv1.ResourceIpServiceClient
	Resources     portcullisv1.ResourceServiceClient
	Users         portcullisv1.UserServiceClient
	Organizations portcullisv1.OrganizationServiceClient
	Audit         portcullisv1.AuditServiceClient
	Auth          portcullisv1.AuthServiceClient
	Webhooks      portcullisv1.WebhookServiceClient
	// IdentityProviders manages the organization's single sign-on providers.
	IdentityProviders portcullisv1.IdentityProviderServiceClient
	// Approvals lists and decides sessions waiting for approval.
	Approvals portcullisv1.ApprovalServiceClient
	// Agents creates, lists and revokes host agents.
	Agents portcullisv1.AgentServiceClient

	watchBackoff Backoff
}

// Option configures Dial.
type Option func(*options)

type options struct {
	header       string
	scheme       string
	secret       string
	tlsConfig    *tls.Config
	insecure     bool
	dialOptions  []grpc.DialOption
	watchBackoff Backoff
}

// WithAPIKey authenticates every call with an API key (sent as `x-api-key`).
func WithAPIKey(key string) Option {
	return func(o *options) { o.header, o.scheme, o.secret = "x-api-key", "", key }
}

// WithBearerToken authenticates every call with an access token from AuthService.VerifyLogin
// (sent as `authorization: Bearer <token>`).
func WithBearerToken(token string) Option {
	return func(o *options) { o.header, o.scheme, o.secret = "authorization", "Bearer ", token }
}

// WithTLS sets the TLS configuration; nil uses the system's roots. TLS is the default.
func WithTLS(config *tls.Config) Option {
	return func(o *options) { o.tlsConfig, o.insecure = config, false }
}

// WithInsecure connects in plaintext, for a server on localhost or behind a trusted proxy.
// Credentials are then sent unencrypted.
func WithInsecure() Option {
	return func(o *options) { o.insecure = true }
}

// WithDialOptions passes extra options to grpc.NewClient (interceptors, keepalive, …).
func WithDialOptions(dialOptions ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, dialOptions...) }
}

// WithWatchBackoff sets how long WatchSession waits before reconnecting after a transport error.
func WithWatchBackoff(backoff Backoff) Option {
	return func(o *options) { o.watchBackoff = backoff }
}

// Backoff is a capped exponential delay: Initial, doubling up to Max.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
}

// DefaultWatchBackoff is WatchSession's reconnection delay unless WithWatchBackoff says otherwise.
var DefaultWatchBackoff = Backoff{Initial: 200 * time.Millisecond, Max: 10 * time.Second}

// Dial creates a client for the server at target ("host:port" or any gRPC target). Like
// grpc.NewClient it does not connect yet: the first call does.
func Dial(target string, opts ...Option) (*Client, error) {
	o := options{watchBackoff: DefaultWatchBackoff}
	for _, opt := range opts {
		opt(&o)
	}
	if o.header != "" && o.secret == "" {
		return nil, errors.New("portcullis: empty API key or bearer token")
	}

	transport := credentials.NewTLS(o.tlsConfig)
	if o.insecure {
		transport = insecure.NewCredentials()
	}
	dialOptions := []grpc.DialOption{
		grpc.WithTransportCredentials(transport),
		grpc.WithChainUnaryInterceptor(unaryErrors),
		grpc.WithChainStreamInterceptor(streamErrors),
	}
	if o.header != "" {
		dialOptions = append(dialOptions, grpc.WithPerRPCCredentials(credential{
			header:     o.header,
			value:      o.scheme + o.secret,
			requireTLS: !o.insecure,
		}))
	}
	conn, err := grpc.NewClient(target, append(dialOptions, o.dialOptions...)...)
	if err != nil {
		return nil, err
	}
	return &Client{
		conn:              conn,
		Sessions:          portcullisv1.NewSessionServiceClient(conn),
		ResourceIPs:       portcullisv1.NewResourceIpServiceClient(conn),
		Resources:         portcullisv1.NewResourceServiceClient(conn),
		Users:             portcullisv1.NewUserServiceClient(conn),
		Organizations:     portcullisv1.NewOrganizationServiceClient(conn),
		Audit:             portcullisv1.NewAuditServiceClient(conn),
		Auth:              portcullisv1.NewAuthServiceClient(conn),
		Webhooks:          portcullisv1.NewWebhookServiceClient(conn),
		IdentityProviders: portcullisv1.NewIdentityProviderServiceClient(conn),
		Approvals:         portcullisv1.NewApprovalServiceClient(conn),
		Agents:            portcullisv1.NewAgentServiceClient(conn),
		watchBackoff:      o.watchBackoff,
	}, nil
}

// Conn is the underlying connection, for services or health checks this package does not wrap.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection; calls in flight fail with codes.Canceled.
func (c *Client) Close() error { return c.conn.Close() }

// credential sends one header with every call; it refuses plaintext unless WithInsecure was chosen.
type credential struct {
	header     string
	value      string
	requireTLS bool
}

func (c credential) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{c.header: c.value}, nil
}

func (c credential) RequireTransportSecurity() bool { return c.requireTLS }
