#!/usr/bin/env bash
# Runs the README's grpcurl examples against a freshly started server and checks their output.
# Usage: scripts/grpcurl-smoke.sh PATH_TO_PORTCULLIS_BINARY
set -euo pipefail

bin=$(realpath "${1:?path to the portcullis binary}")
readme=$(realpath "$(dirname "$0")/../README.md")
grpcurl=${GRPCURL:-grpcurl}
work=$(mktemp -d)
server_pid=
receiver_pid=
dex_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    [ -n "$dex_pid" ] && kill "$dex_pid" 2>/dev/null
    [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port
metrics_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PORTCULLIS_METRICS__LISTEN=127.0.0.1:$metrics_port PORTCULLIS_METRICS__DATABASE_REFRESH_SECS=0
export PORTCULLIS_DATABASE_URL="sqlite://$work/portcullis.db?mode=rwc"
# Webhooks go to a receiver on loopback that checks each signature with the README's Python.
export PORTCULLIS_SEALING_KEY=$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')
export PORTCULLIS_WEBHOOKS__ALLOWED_PRIVATE_ENDPOINTS='["http://127.0.0.1:*"]'
export PORTCULLIS_WEBHOOKS__POLL_INTERVAL_MS=100 PORTCULLIS_WEBHOOKS__RETRY_BASE_MS=200
hook_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 - "$readme" "$hook_port" "$work" <<'PY' &
import http.server, json, re, sys
readme, port, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
exec(re.search(r"```python\n(import base64.*?)```", open(readme).read(), re.S).group(1))
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        try:
            secret = open(f"{work}/webhook-secret").read().strip()
        except FileNotFoundError:
            secret = ""
        if not secret:  # the first event can come before grpcurl has printed the secret
            self.send_response(503)
            self.end_headers()
            return
        good = verify(secret, self.headers, body)
        with open(f"{work}/webhooks.log", "a") as log:
            log.write(f"{json.loads(body)['type']} {'verified' if good else 'BAD-SIGNATURE'}\n")
        self.send_response(200 if good else 400)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Hook).serve_forever()
PY
receiver_pid=$!
# Single sign-on: the README's Dex (PORTCULLIS_TEST_DEX, which scripts/test.sh builds) on a free
# port, its redirect pointing at this server.
if [ -n "${PORTCULLIS_TEST_DEX:-}" ]; then
    dex_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 - "$readme" "$dex_port" "$addr" "$work" >dex.yaml <<'PY'
import re, sys
readme, port, addr, work = sys.argv[1:]
config = re.search(r"```yaml\n# dex.yaml[^\n]*\n(.*?)```", open(readme).read(), re.S).group(1)
config = config.replace("127.0.0.1:5556", f"127.0.0.1:{port}").replace("127.0.0.1:50051", addr)
print(config.replace("file: dex.db", f"file: {work}/dex.db"))
PY
    "$PORTCULLIS_TEST_DEX" serve dex.yaml 2>dex.log &
    dex_pid=$!
    export PORTCULLIS_SERVER__PUBLIC_URL="http://$addr"
    export PORTCULLIS_SSO__ALLOWED_PRIVATE_ISSUERS="[\"http://127.0.0.1:$dex_port/dex\"]"
    for _ in $(seq 100); do
        python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1])" \
            "http://127.0.0.1:$dex_port/dex/.well-known/openid-configuration" 2>/dev/null && break
        sleep 0.2
    done
fi
KEY=$("$bin" init --admin-email admin@example.com 2>init.log)
"$bin" serve --listen "$addr" 2>server.log &
server_pid=$!
for _ in $(seq 50); do
    "$grpcurl" -plaintext "$addr" list >/dev/null 2>&1 && break
    sleep 0.2
done

passes=0 failures=0
check() { # name, expected text, command...
    local name=$1 expected=$2
    shift 2
    local output
    output=$("$@" 2>&1) || true
    if grep -qF -- "$expected" <<<"$output"; then
        echo "ok: $name"
        passes=$((passes + 1))
    else
        echo "FAILED: $name: expected '$expected' in:"
        echo "$output"
        failures=$((failures + 1))
    fi
}

check "list" "portcullis.v1.SessionService" "$grpcurl" -plaintext "$addr" list
check "describe" "rpc StartSession" "$grpcurl" -plaintext "$addr" describe portcullis.v1.SessionService
check "health" '"status": "SERVING"' "$grpcurl" -plaintext "$addr" grpc.health.v1.Health/Check
check "no credentials" "Code: Unauthenticated" "$grpcurl" -plaintext "$addr" portcullis.v1.UserService/ListUsers
check "create user" '"email": "ada@example.com"' "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d '{"user": {"email": "ada@example.com", "full_name": "Ada Lovelace", "role": "ROLE_USER"}}' \
    "$addr" portcullis.v1.UserService/CreateUser
check "create resource" '"name": "staging-db"' "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d '{"resource": {"name": "staging-db", "memory": {}}}' \
    "$addr" portcullis.v1.ResourceService/CreateResource
check "list users" '"email": "admin@example.com"' "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    "$addr" portcullis.v1.UserService/ListUsers
check "audit" '"type": "resource.created"' "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d '{"types": ["user.created", "resource.created"]}' "$addr" portcullis.v1.AuditService/ListAuditEvents
check "bad input" '"field": "resource.name"' "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d '{"resource": {"memory": {}}}' "$addr" portcullis.v1.ResourceService/CreateResource

# The README's Azure example is a valid resource.
azure=$(python3 - "$readme" <<'PY'
import re, sys
found = re.search(r"-d '(\{\"resource\": \{\"name\": \"[a-z-]+\",\n  \"azure_network_security_group\".*?)' \\\n", open(sys.argv[1]).read(), re.S)
print(found.group(1))
PY
)
check "azure resource" '"nsgName": "nsg-bastion"' "$grpcurl" -plaintext -H "x-api-key: $KEY" -d "$azure" \
    "$addr" portcullis.v1.ResourceService/CreateResource

# Webhooks: a receiver for every event; the secret is shown once.
HOOK=$("$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d "{\"url\": \"http://127.0.0.1:$hook_port/hook\", \"description\": \"smoke receiver\"}" \
    "$addr" portcullis.v1.WebhookService/CreateWebhook)
check "create webhook" '"secret": "whsec_' echo "$HOOK"
python3 -c "import json, sys; print(json.load(sys.stdin)['secret'])" <<<"$HOOK" >"$work/webhook-secret.new"
mv "$work/webhook-secret.new" "$work/webhook-secret"
check "plain http elsewhere refused" '"field": "url"' "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d '{"url": "http://hooks.example.com/portcullis"}' "$addr" portcullis.v1.WebhookService/CreateWebhook

# Sessions: assign the resource to the admin, start, stop, and watch the session to its end.
json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
RESOURCE_ID=$("$grpcurl" -plaintext -H "x-api-key: $KEY" "$addr" portcullis.v1.ResourceService/ListResources | json "['resources'][0]['id']")

# The README's identity provider, registered against that Dex; its secret is never shown.
if [ -n "$dex_pid" ]; then
    idp=$(python3 - "$readme" "$dex_port" "$RESOURCE_ID" <<'PY'
import re, sys
readme, port, resource = sys.argv[1:]
found = re.search(r"-d '(\{\"identity_provider\": .*?)' localhost:50051", open(readme).read(), re.S).group(1)
print(found.replace("127.0.0.1:5556", f"127.0.0.1:{port}").replace("RESOURCE_ID", resource))
PY
    )
    CREATED=$("$grpcurl" -plaintext -H "x-api-key: $KEY" -d "$idp" "$addr" portcullis.v1.IdentityProviderService/CreateIdentityProvider 2>&1)
    check "create identity provider" '"clientSecretSet": true' echo "$CREATED"
    IDP_ID=$(json "['identityProvider']['id']" <<<"$CREATED")
    GOT=$("$grpcurl" -plaintext -H "x-api-key: $KEY" -d "{\"id\": \"$IDP_ID\"}" "$addr" portcullis.v1.IdentityProviderService/GetIdentityProvider)
    check "identity provider shown" '"groupMappings"' echo "$GOT"
    if grep -q "portcullis-dex-secret" <<<"$CREATED$GOT"; then
        echo "FAILED: the identity provider's client secret was shown"
        failures=$((failures + 1))
    fi
    check "sso login starts" '"authorizationUrl": "http://127.0.0.1:'"$dex_port"'/dex/auth' "$grpcurl" -plaintext \
        -d "{\"organization_id\": \"$(json "['identityProvider']['organizationId']" <<<"$CREATED")\"}" \
        "$addr" portcullis.v1.AuthService/StartSsoLogin
fi
ADMIN_ID=$("$grpcurl" -plaintext -H "x-api-key: $KEY" "$addr" portcullis.v1.UserService/GetCurrentUser | json "['user']['id']")
check "assign" "{}" "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d "{\"resource_id\": \"$RESOURCE_ID\", \"user_id\": \"$ADMIN_ID\"}" \
    "$addr" portcullis.v1.ResourceService/AssignResource
START=$("$grpcurl" -plaintext -H "x-api-key: $KEY" -d '{"ipv4_address": "203.0.113.7", "duration_hours": 1}' \
    "$addr" portcullis.v1.SessionService/StartSession)
check "start session" '"status": "SESSION_STATUS_PENDING"' echo "$START"
SESSION_ID=$(json "['session']['id']" <<<"$START")
check "watch to active" '"status": "SESSION_STATUS_ACTIVE"' timeout 3 "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d "{\"id\": \"$SESSION_ID\"}" "$addr" portcullis.v1.SessionService/WatchSession
check "stop session" '"endedReason": "ENDED_REASON_MANUAL"' "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d "{\"id\": \"$SESSION_ID\"}" "$addr" portcullis.v1.SessionService/StopSession
check "watch to the end" '"status": "SESSION_STATUS_CANCELLED"' timeout 10 "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d "{\"id\": \"$SESSION_ID\"}" "$addr" portcullis.v1.SessionService/WatchSession
check "start again after the end" '"status": "SESSION_STATUS_PENDING"' "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d '{"ipv4_address": "203.0.113.7"}' "$addr" portcullis.v1.SessionService/StartSession
check "same address twice" "Code: AlreadyExists" "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d '{"ipv4_address": "203.0.113.7"}' "$addr" portcullis.v1.SessionService/StartSession
check "a session in minutes" '"status": "SESSION_STATUS_PENDING"' "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d '{"ipv4_address": "203.0.113.8", "duration_minutes": 15}' "$addr" portcullis.v1.SessionService/StartSession
check "hours and minutes at once" "Code: InvalidArgument" "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d '{"ipv4_address": "203.0.113.9", "duration_hours": 1, "duration_minutes": 15}' \
    "$addr" portcullis.v1.SessionService/StartSession

check "client address" '"ipAddress": "127.0.0.1"' "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    "$addr" portcullis.v1.SessionService/GetClientAddress
BOUND=$("$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d '{"ipv4_address": "203.0.113.10", "heartbeat_seconds": 30}' "$addr" portcullis.v1.SessionService/StartSession)
check "a session bound to its client" '"heartbeatSeconds": 30' echo "$BOUND"
BOUND_ID=$(json "['session']['id']" <<<"$BOUND")
check "change address" '"ipv4Address": "203.0.113.77"' "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d "{\"id\": \"$BOUND_ID\", \"ipv4_address\": \"203.0.113.77\"}" \
    "$addr" portcullis.v1.SessionService/ChangeSessionAddress

# API keys: create one for a CI job, see it listed, revoke it; it stops working at once.
CREATED=$("$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d '{"name": "deploy-bot", "permissions": ["sessions:read", "sessions:write"]}' \
    "$addr" portcullis.v1.AuthService/CreateApiKey)
check "create api key" '"secret": "pcl_' echo "$CREATED"
BOT_KEY=$(json "['secret']" <<<"$CREATED")
KEY_ID=$(json "['apiKey']['id']" <<<"$CREATED")
check "list api keys" '"name": "deploy-bot"' "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    "$addr" portcullis.v1.AuthService/ListApiKeys
check "revoke api key" '"revokedAt"' "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d "{\"id\": \"$KEY_ID\"}" "$addr" portcullis.v1.AuthService/RevokeApiKey
check "revoked key refused" "Code: Unauthenticated" "$grpcurl" -plaintext -H "x-api-key: $BOT_KEY" \
    "$addr" portcullis.v1.SessionService/ListSessions

# The platform operator: a key from the command line, then tenants through OrganizationService.
OPERATOR_KEY=$("$bin" operator-key --name platform 2>operator.log)
check "operator key" "pco_" echo "$OPERATOR_KEY"
FOUNDED=$("$grpcurl" -plaintext -H "x-api-key: $OPERATOR_KEY" \
    -d '{"organization": {"name": "Globex", "tier": "TIER_BUSINESS", "cloud_scopes": {"aws_accounts": ["111122223333"], "gcp_projects": ["globex-prod"]}}, "admin_email": "hank@globex.example"}' \
    "$addr" portcullis.v1.OrganizationService/CreateOrganization)
check "create organization" '"adminApiKey": "pcl_' echo "$FOUNDED"
ORG_ID=$(json "['organization']['id']" <<<"$FOUNDED")
check "list organizations" '"name": "Globex"' "$grpcurl" -plaintext -H "x-api-key: $OPERATOR_KEY" \
    "$addr" portcullis.v1.OrganizationService/ListOrganizations
check "operator sets the tier" '"tier": "TIER_ENTERPRISE"' "$grpcurl" -plaintext -H "x-api-key: $OPERATOR_KEY" \
    -d "{\"organization\": {\"id\": \"$ORG_ID\", \"tier\": \"TIER_ENTERPRISE\"}, \"update_mask\": {\"paths\": [\"tier\"]}}" \
    "$addr" portcullis.v1.OrganizationService/UpdateOrganization
check "admins cannot" "ERROR_REASON_OPERATOR_REQUIRED" "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d '{"organization": {"tier": "TIER_ENTERPRISE"}, "update_mask": {"paths": ["tier"]}}' \
    "$addr" portcullis.v1.OrganizationService/UpdateOrganization
check "suspend" '"suspended": true' "$grpcurl" -plaintext -H "x-api-key: $OPERATOR_KEY" \
    -d "{\"organization_id\": \"$ORG_ID\", \"reason\": \"unpaid\"}" \
    "$addr" portcullis.v1.OrganizationService/SuspendOrganization
check "resume" '"name": "Globex"' "$grpcurl" -plaintext -H "x-api-key: $OPERATOR_KEY" \
    -d "{\"organization_id\": \"$ORG_ID\"}" "$addr" portcullis.v1.OrganizationService/ResumeOrganization
check "operators are members of nothing" "ERROR_REASON_MEMBER_REQUIRED" "$grpcurl" -plaintext \
    -H "x-api-key: $OPERATOR_KEY" "$addr" portcullis.v1.SessionService/ListSessions

# Approvals: the README's policy on the resource (two more admins may approve), a session that
# waits for them, the requester's own decision refused, and a withdrawal.
for approver in grace hank; do
    "$grpcurl" -plaintext -H "x-api-key: $KEY" -d "{\"user\": {\"email\": \"$approver@example.com\", \"role\": \"ROLE_ADMIN\"}}" \
        "$addr" portcullis.v1.UserService/CreateUser >/dev/null
done
policy=$(python3 - "$readme" "$RESOURCE_ID" <<'PY'
import re, sys
readme, resource = sys.argv[1:]
found = re.search(r"-d '(\{\"resource\": \{\"id\": \"RESOURCE_ID\", \"approval\".*?)' localhost:50051", open(readme).read(), re.S)
print(found.group(1).replace("RESOURCE_ID", resource))
PY
)
check "approval policy" '"approvals": 2' "$grpcurl" -plaintext -H "x-api-key: $KEY" -d "$policy" \
    "$addr" portcullis.v1.ResourceService/UpdateResource
WAITING=$("$grpcurl" -plaintext -H "x-api-key: $KEY" -d '{"ipv4_address": "203.0.113.20", "justification": "INC-42"}' \
    "$addr" portcullis.v1.SessionService/StartSession)
check "waits for approval" '"status": "SESSION_STATUS_AWAITING_APPROVAL"' echo "$WAITING"
WAITING_ID=$(json "['session']['id']" <<<"$WAITING")
check "nobody decides their own" "{}" "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    "$addr" portcullis.v1.ApprovalService/ListApprovalRequests
check "self-approval refused" "Code: PermissionDenied" "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d "{\"id\": \"$WAITING_ID\", \"reason\": \"ok\"}" "$addr" portcullis.v1.ApprovalService/ApproveSession
check "withdrawn" '"status": "SESSION_STATUS_CANCELLED"' "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    -d "{\"id\": \"$WAITING_ID\"}" "$addr" portcullis.v1.SessionService/StopSession

check "expiry mails off" '"user"' "$grpcurl" -plaintext -H "x-api-key: $KEY" -d '{"expiry_emails": false}' \
    "$addr" portcullis.v1.UserService/UpdateCurrentUser

# The README's host agent and host resource: the credential is shown once, the resource names it.
AGENT=$("$grpcurl" -plaintext -H "x-api-key: $KEY" -d '{"name": "bastion-1"}' "$addr" portcullis.v1.AgentService/CreateAgent)
check "create agent" '"credential": "pca_' echo "$AGENT"
host=$(python3 - "$readme" "$(python3 -c "import json, sys; print(json.load(sys.stdin)['agent']['id'])" <<<"$AGENT")" <<'PY'
import re, sys
readme, agent = sys.argv[1:]
found = re.search(r"-d '(\{\"resource\": \{\"name\": \"host-ssh\",\n  \"host_firewall\".*?)' \\\n", open(readme).read(), re.S)
print(found.group(1).replace("AGENT_ID", agent))
PY
)
check "host resource" '"hostFirewall"' "$grpcurl" -plaintext -H "x-api-key: $KEY" -d "$host" \
    "$addr" portcullis.v1.ResourceService/CreateResource
check "agents listed, none connected" '"name": "bastion-1"' "$grpcurl" -plaintext -H "x-api-key: $KEY" \
    "$addr" portcullis.v1.AgentService/ListAgents

# Every event so far reached the receiver, signed (checked by the README's Python).
for _ in $(seq 50); do grep -q "^session.ended" "$work/webhooks.log" 2>/dev/null && break; sleep 0.2; done
check "webhook delivered and verified" "session.ended verified" cat "$work/webhooks.log"
check "no bad signature" "0 bad" sh -c "echo \$(grep -c BAD-SIGNATURE '$work/webhooks.log') bad"

# The README's Metrics example: the sessions above, by status, from every replica's /metrics.
check "metrics" 'portcullis_sessions{status="CANCELLED"}' curl -s "http://$PORTCULLIS_METRICS__LISTEN/metrics"

echo "grpcurl: $passes passed, $failures failed"
[ "$failures" = 0 ]
