package testserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	portcullisv1 "github.com/portcullis/portcullis/sdk/go/gen/portcullis/v1"
	"github.com/portcullis/portcullis/sdk/go/portcullis"
)

// DexEnv names the environment variable holding the path of a Dex binary (scripts/dex.sh
// builds one); the single sign-on tests are skipped without it.
const DexEnv = "PORTCULLIS_TEST_DEX"

// dexPasswordHash is bcrypt of "password", as Dex's own examples spell it.
const dexPasswordHash = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W"

// Dex is a real OpenID Connect provider whose one user, admin@example.com, is in group "ops".
type Dex struct {
	Issuer   string
	origin   string
	redirect string
}

// StartSSO starts Dex and a server whose organization logs in through it ("ops" maps to
// ROLE_ADMIN); it skips the test when DexEnv is unset.
func StartSSO(t testing.TB) (*Server, *Dex) {
	t.Helper()
	binary := os.Getenv(DexEnv)
	if binary == "" {
		t.Skipf("%s is not set (scripts/test.sh builds Dex)", DexEnv)
	}
	addr := freeAddr(t)
	dex := startDex(t, binary, "http://"+addr+"/sso/callback")
	srv := startOn(t, addr,
		"PORTCULLIS_SEALING_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
		"PORTCULLIS_SERVER__PUBLIC_URL=http://"+addr,
		fmt.Sprintf("PORTCULLIS_SSO__ALLOWED_PRIVATE_ISSUERS=[%q]", dex.origin))
	client, err := portcullis.Dial(srv.Addr, portcullis.WithAPIKey(srv.AdminKey), portcullis.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	_, err = client.IdentityProviders.CreateIdentityProvider(context.Background(), &portcullisv1.CreateIdentityProviderRequest{
		IdentityProvider: &portcullisv1.IdentityProvider{
			DisplayName: "Dex", IssuerUrl: dex.Issuer, ClientId: "portcullis", ClientSecret: "portcullis-test-secret",
			Scopes:        []string{"openid", "email", "profile", "groups", "offline_access"},
			GroupMappings: []*portcullisv1.GroupMapping{{Group: "ops", Role: portcullisv1.Role_ROLE_ADMIN}},
		},
	})
	if err != nil {
		t.Fatalf("registering Dex: %v", err)
	}
	return srv, dex
}

func startDex(t testing.TB, binary, redirect string) *Dex {
	t.Helper()
	dir := t.TempDir()
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	dex := &Dex{Issuer: "http://127.0.0.1:" + port + "/dex", origin: "http://127.0.0.1:" + port + "/", redirect: redirect}
	// JSON is YAML: no YAML writer needed.
	config, err := json.Marshal(map[string]any{
		"issuer":           dex.Issuer,
		"storage":          map[string]any{"type": "sqlite3", "config": map[string]any{"file": filepath.Join(dir, "dex.db")}},
		"web":              map[string]any{"http": "127.0.0.1:" + port},
		"oauth2":           map[string]any{"skipApprovalScreen": true},
		"enablePasswordDB": true,
		"staticPasswords": []any{map[string]any{
			"email": "admin@example.com", "hash": dexPasswordHash, "username": "admin",
			"userID": "b7d2c2a4-5e84-4b7c-9d55-8d0c1f3e8a11", "groups": []string{"ops"},
		}},
		"staticClients": []any{map[string]any{
			"id": "portcullis", "secret": "portcullis-test-secret", "name": "Portcullis", "redirectURIs": []string{redirect},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "dex.yaml")
	if err := os.WriteFile(file, config, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "serve", file)
	log, err := os.Create(filepath.Join(dir, "dex.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting dex: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); log.Close() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		answer, err := http.Get(dex.Issuer + "/.well-known/openid-configuration")
		if err == nil {
			answer.Body.Close()
			if answer.StatusCode == http.StatusOK {
				return dex
			}
		}
		if time.Now().After(deadline) {
			logged, _ := os.ReadFile(filepath.Join(dir, "dex.log"))
			t.Fatalf("dex never answered discovery:\n%s", logged)
		}
	}
}

// LogIn does what a browser does with authURL: fills in Dex's password form as
// admin@example.com and follows the redirects until Dex sends it back to the server, whose
// callback it then opens. It answers the callback page's status.
func (d *Dex) LogIn(t testing.TB, authURL string) int {
	t.Helper()
	browser := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	next, posted := authURL, false
	for range 10 {
		if strings.HasPrefix(next, d.redirect) {
			answer, err := http.Get(next)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, answer.Body)
			answer.Body.Close()
			return answer.StatusCode
		}
		answer, err := browser.Get(next)
		if err != nil {
			t.Fatal(err)
		}
		answer.Body.Close()
		if answer.StatusCode == http.StatusOK && !posted {
			posted = true
			form := url.Values{"login": {"admin@example.com"}, "password": {"password"}}
			if answer, err = browser.PostForm(next, form); err != nil {
				t.Fatal(err)
			}
			answer.Body.Close()
		}
		location := answer.Header.Get("Location")
		if location == "" {
			t.Fatalf("dex answered %d at %s without a redirect", answer.StatusCode, next)
		}
		if !strings.HasPrefix(location, "http") {
			location = strings.TrimSuffix(d.origin, "/") + location
		}
		next = location
	}
	t.Fatalf("the login never came back to %s", d.redirect)
	return 0
}
