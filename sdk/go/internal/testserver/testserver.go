// Package testserver runs the real Portcullis server binary for the SDK's live tests: a fresh
// SQLite database, `portcullis init` for an admin API key, and `portcullis serve` on a free port.
package testserver

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	portcullisv1 "github.com/portcullis/portcullis/sdk/go/gen/portcullis/v1"
	"github.com/portcullis/portcullis/sdk/go/portcullis"
)

// BinaryEnv names the environment variable holding the path of the server binary.
const BinaryEnv = "PORTCULLIS_BIN"

// Server is one running server; Stop (registered as a cleanup) ends it.
type Server struct {
	// Addr is the server's host:port on loopback.
	Addr string
	// AdminKey is the API key `portcullis init` printed for admin@example.com.
	AdminKey string

	// RootCAs trusts the server's certificate when it was started with StartTLS.
	RootCAs *x509.CertPool

	t      testing.TB
	binary string
	dir    string
	env    []string
	cmd    *exec.Cmd
}

// Start initializes a database and starts a plaintext server on it.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}

// StartTLS starts a server that speaks TLS only, with a certificate for localhost issued by
// a CA made for the test (RootCAs trusts it).
func StartTLS(t testing.TB) *Server {
	t.Helper()
	return start(t, true)
}

func start(t testing.TB, withTLS bool) *Server {
	t.Helper()
	return startWith(t, withTLS, freeAddr(t))
}

// startOn starts a plaintext server on addr with extra environment (`PORTCULLIS_…=…`).
func startOn(t testing.TB, addr string, env ...string) *Server {
	t.Helper()
	return startWith(t, false, addr, env...)
}

func startWith(t testing.TB, withTLS bool, addr string, env ...string) *Server {
	t.Helper()
	binary := os.Getenv(BinaryEnv)
	if binary == "" {
		t.Fatalf("%s must name the server binary (cargo build; see the README's SDK section)", BinaryEnv)
	}
	s := &Server{t: t, binary: binary, dir: t.TempDir(), env: env}
	if withTLS {
		s.RootCAs = s.issueCertificate()
	}
	init := s.command("init", "--admin-email", "admin@example.com")
	var stderr bytes.Buffer
	init.Stderr = &stderr
	key, err := init.Output()
	if err != nil {
		t.Fatalf("portcullis init: %v\n%s", err, stderr.String())
	}
	s.AdminKey = strings.TrimSpace(string(key))
	s.Addr = addr
	s.serve()
	t.Cleanup(s.Stop)
	return s
}

// Restart kills the server without warning, as a crash would, and starts it again on the same
// address and database.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.serve()
}

// Stop kills the server.
func (s *Server) Stop() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

func (s *Server) serve() {
	s.t.Helper()
	s.cmd = s.command("serve", "--listen", s.Addr)
	log, err := os.OpenFile(filepath.Join(s.dir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer log.Close()
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("portcullis serve: %v", err)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if conn, err := net.Dial("tcp", s.Addr); err == nil {
			conn.Close()
			return
		}
	}
	logged, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
	s.t.Fatalf("the server did not listen on %s:\n%s", s.Addr, logged)
}

func (s *Server) command(args ...string) *exec.Cmd {
	cmd := exec.Command(s.binary, args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "PORTCULLIS_DATABASE_URL=sqlite://"+filepath.Join(s.dir, "portcullis.db")+"?mode=rwc")
	cmd.Env = append(cmd.Env, s.env...)
	return cmd
}

// issueCertificate makes a CA and a certificate for localhost it signs, configures the server
// with them, and answers a pool that trusts the CA.
func (s *Server) issueCertificate() *x509.CertPool {
	s.t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			s.t.Fatal(err)
		}
		return key
	}
	caKey, leafKey := newKey(), newKey()
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "portcullis SDK test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		s.t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		s.t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		s.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		s.t.Fatal(err)
	}
	write := func(name, kind string, der []byte) string {
		path := filepath.Join(s.dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			s.t.Fatal(err)
		}
		return path
	}
	s.env = append(s.env,
		"PORTCULLIS_TLS__CERT_FILE="+write("cert.pem", "CERTIFICATE", leafDER),
		"PORTCULLIS_TLS__KEY_FILE="+write("key.pem", "PRIVATE KEY", keyDER))
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool
}

func freeAddr(t testing.TB) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	return listener.Addr().String()
}

// AssignMemoryResource creates an in-memory resource and assigns it to the admin, so that the
// admin's sessions have a rule to apply.
func (s *Server) AssignMemoryResource(name string) {
	s.t.Helper()
	client, err := portcullis.Dial(s.Addr, portcullis.WithAPIKey(s.AdminKey), portcullis.WithInsecure())
	if err != nil {
		s.t.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	created, err := client.Resources.CreateResource(ctx, &portcullisv1.CreateResourceRequest{Resource: &portcullisv1.Resource{
		Name:     name,
		Provider: &portcullisv1.Resource_Memory{Memory: &portcullisv1.MemoryProvider{}},
	}})
	if err != nil {
		s.t.Fatalf("create resource: %v", err)
	}
	me, err := client.Users.GetCurrentUser(ctx, &portcullisv1.GetCurrentUserRequest{})
	if err != nil {
		s.t.Fatalf("current user: %v", err)
	}
	if _, err := client.Resources.AssignResource(ctx, &portcullisv1.AssignResourceRequest{
		ResourceId: created.GetResource().GetId(),
		UserId:     me.GetUser().GetId(),
	}); err != nil {
		s.t.Fatalf("assign resource: %v", err)
	}
}

// OrganizationID is the id of the organization `portcullis init` made.
func (s *Server) OrganizationID(t testing.TB) string {
	t.Helper()
	client, err := portcullis.Dial(s.Addr, portcullis.WithAPIKey(s.AdminKey), portcullis.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	me, err := client.Users.GetCurrentUser(context.Background(), &portcullisv1.GetCurrentUserRequest{})
	if err != nil {
		t.Fatalf("current user: %v", err)
	}
	return me.GetUser().GetOrganizationId()
}

// LogIn logs email in by the emailed code, read from the server's log (the default
// mail.transport = log prints it), and answers the login's access token.
func (s *Server) LogIn(t testing.TB, email string) string {
	t.Helper()
	client, err := portcullis.Dial(s.Addr, portcullis.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	started, err := client.Auth.StartLogin(ctx, &portcullisv1.StartLoginRequest{Email: email})
	if err != nil {
		t.Fatalf("start login: %v", err)
	}
	code := ""
	for deadline := time.Now().Add(10 * time.Second); code == ""; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no login code for %s in the server log", email)
		}
		logged, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
		for _, line := range strings.Split(string(logged), "\n") {
			at := strings.Index(line, "login code: ")
			if at >= 0 && strings.Contains(line, "email="+email) && len(line) >= at+18 {
				code = line[at+12 : at+18]
			}
		}
	}
	verified, err := client.Auth.VerifyLogin(ctx, &portcullisv1.VerifyLoginRequest{
		VerificationCodeId: started.GetVerificationCodeId(), Code: code,
	})
	if err != nil {
		t.Fatalf("verify login: %v", err)
	}
	return verified.GetAccessToken()
}
