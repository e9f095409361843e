//! A fake of the Azure Resource Manager endpoints the Azure provider uses — network security
//! groups and their security rules (GET, PUT, DELETE), asynchronous operations, the caller's
//! permissions — and of Entra ID's client-credentials token endpoint (over TLS, as
//! azure_identity insists). Faithful where it matters:
//! - a PUT answers at once (201 new, 200 replaced) with the rule `Updating` and an
//!   `Azure-AsyncOperation` URL that reports `InProgress` for a few polls before `Succeeded`
//!   (with `Retry-After: 10`, as Microsoft.Network sends); a DELETE answers 202 and the rule goes
//!   when its operation ends; deleting a missing rule answers 204;
//! - every write gives the group and its rules a new ETag, and `If-Match` is ignored, as
//!   Microsoft.Network ignores it (Azure/azure-rest-api-specs#6789): the fake must not prove a
//!   guarantee Azure does not give;
//! - two inbound rules may not share a priority (400 `SecurityRuleConflict`), priorities lie in
//!   100..=4096, and an unknown group is 404 `ResourceNotFound`;
//! - with tokens required, a call without a token the fake issued is 401
//!   `InvalidAuthenticationToken`; 429 with `Retry-After` can be injected.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Polls an operation answers `InProgress` before it is `Succeeded`.
const POLLS_IN_PROGRESS: u32 = 2;
const LOCATION: &str = "westeurope";

#[derive(Clone)]
pub struct FakeArm {
    /// Resource Manager (plain HTTP: resources name it as their endpoint_url).
    pub url: String,
    state: Arc<Mutex<Arm>>,
}

#[derive(Default)]
struct Arm {
    /// (subscription, resource group, group name), lowercase → group.
    groups: BTreeMap<(String, String, String), Group>,
    /// Operation id → polls left and what happens when it ends.
    operations: HashMap<String, Operation>,
    next_id: u64,
    /// The token endpoint's client secret, when tokens are required; and the tokens issued.
    client_secret: Option<String>,
    tokens: Vec<String>,
    throttled: u32,
    /// The caller's permissions on every group (`actions`, `notActions`).
    permissions: (Vec<String>, Vec<String>),
    forbid_reads: bool,
    /// Writes answer only a `Location` URL (no `Azure-AsyncOperation`).
    location_only: bool,
    /// Operation URLs point here instead of at the fake (an endpoint luring the token away).
    operations_at: Option<String>,
    /// The next operation to start ends Failed with this error code and message.
    fail_next_operation: Option<(String, String)>,
    /// Every request, as "METHOD path".
    calls: Vec<String>,
}

struct Group {
    name: String,
    etag: String,
    /// Rule name, lowercase → rule.
    rules: BTreeMap<String, Value>,
}

struct Operation {
    polls_left: u32,
    /// Ends Failed with this error instead of Succeeded.
    failure: Option<(String, String)>,
    group: (String, String, String),
    rule: String,
    delete: bool,
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

fn key(subscription: &str, group: &str, name: &str) -> (String, String, String) {
    (subscription.to_ascii_lowercase(), group.to_ascii_lowercase(), name.to_ascii_lowercase())
}

impl FakeArm {
    pub async fn start() -> FakeArm {
        let state = Arc::new(Mutex::new(Arm { permissions: (vec!["*".into()], Vec::new()), ..Arm::default() }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakeArm { url, state };
        let group =
            "/subscriptions/{subscription}/resourceGroups/{rg}/providers/Microsoft.Network/networkSecurityGroups/{nsg}";
        let app = Router::new()
            .route(group, get(read_group))
            .route(&format!("{group}/securityRules/{{rule}}"), get(read_rule).put(put_rule).delete(delete_rule))
            .route(&format!("{group}/providers/Microsoft.Authorization/permissions"), get(permissions))
            .route(
                "/subscriptions/{subscription}/providers/Microsoft.Network/locations/{location}/operations/{id}",
                get(operation),
            )
            .route(
                "/subscriptions/{subscription}/providers/Microsoft.Network/locations/{location}/operationResults/{id}",
                get(operation_result),
            )
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    /// Serves Entra ID's token endpoint over TLS with `certificate` (for 127.0.0.1), and from
    /// then on refuses calls without a token it issued to `client_secret`. Answers its URL.
    pub async fn require_tokens(&self, client_secret: &str, certificate: &super::certs::Issued) -> String {
        self.lock().client_secret = Some(client_secret.to_owned());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let tls = super::tls_listener::TlsListener::new(listener, certificate);
        let app = Router::new().route("/{tenant}/oauth2/v2.0/token", post(token)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(tls, app).await.unwrap() });
        url
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arm> {
        self.state.lock().unwrap()
    }

    /// Creates an empty group (holding Azure's default rules only), as the portal would.
    pub fn create_group(&self, subscription: &str, resource_group: &str, name: &str) {
        let group = Group { name: name.to_owned(), etag: new_etag(), rules: BTreeMap::new() };
        self.lock().groups.insert(key(subscription, resource_group, name), group);
    }

    /// Creates or replaces a rule directly, as someone working in the portal would.
    pub fn put_rule(&self, subscription: &str, resource_group: &str, group: &str, rule: Value) {
        let name = rule["name"].as_str().unwrap().to_ascii_lowercase();
        let mut state = self.lock();
        let group = state.groups.get_mut(&key(subscription, resource_group, group)).unwrap();
        group.rules.insert(name, rule);
        group.etag = new_etag();
    }

    /// Deletes a rule directly; answers whether it existed.
    pub fn remove_rule(&self, subscription: &str, resource_group: &str, group: &str, name: &str) -> bool {
        let mut state = self.lock();
        let group = state.groups.get_mut(&key(subscription, resource_group, group)).unwrap();
        group.rules.remove(&name.to_ascii_lowercase()).is_some()
    }

    /// A rule as the API shows it.
    pub fn rule(&self, subscription: &str, resource_group: &str, group: &str, name: &str) -> Option<Value> {
        let state = self.lock();
        state.groups.get(&key(subscription, resource_group, group))?.rules.get(&name.to_ascii_lowercase()).cloned()
    }

    /// The names of a group's rules.
    pub fn rule_names(&self, subscription: &str, resource_group: &str, group: &str) -> Vec<String> {
        let state = self.lock();
        let group = &state.groups[&key(subscription, resource_group, group)];
        group.rules.values().map(|rule| rule["name"].as_str().unwrap_or_default().to_owned()).collect()
    }

    /// The next `count` requests answer 429 with `Retry-After: 1`.
    pub fn throttle_next(&self, count: u32) {
        self.lock().throttled = count;
    }

    /// The caller's permissions on every group, as Microsoft.Authorization lists them.
    pub fn set_permissions(&self, actions: &[&str], not_actions: &[&str]) {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        self.lock().permissions = (owned(actions), owned(not_actions));
    }

    /// Reads of groups answer 403 AuthorizationFailed (or, false, succeed again).
    pub fn forbid_reads(&self, forbid: bool) {
        self.lock().forbid_reads = forbid;
    }

    /// Writes answer only a `Location` URL, as some resource providers do.
    pub fn location_only(&self) {
        self.lock().location_only = true;
    }

    /// The next write's operation ends Failed with `code`, the rule left `Failed`, as when
    /// Microsoft.Network refuses a change only once it applies it.
    pub fn fail_next_operation(&self, code: &str, message: &str) {
        self.lock().fail_next_operation = Some((code.to_owned(), message.to_owned()));
    }

    /// Operation URLs point at `base` (another host) from now on.
    pub fn operations_at(&self, base: &str) {
        self.lock().operations_at = Some(base.to_owned());
    }

    /// The requests received so far, as "METHOD path".
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Records the call; answers a refusal if one is due (authentication, throttling).
    fn enter(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
        let mut state = self.lock();
        state.calls.push(format!("{method} {path}"));
        if state.client_secret.is_some() {
            let bearer =
                headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
            if !bearer.is_some_and(|token| state.tokens.iter().any(|issued| issued == token)) {
                return Some(error(
                    StatusCode::UNAUTHORIZED,
                    "InvalidAuthenticationToken",
                    "The access token is invalid.".into(),
                ));
            }
        }
        if state.throttled > 0 {
            state.throttled -= 1;
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "SubscriptionRequestsThrottled",
                "Number of write requests for subscription exceeded the limit.".into(),
            );
            response.headers_mut().insert("retry-after", "1".parse().unwrap());
            return Some(response);
        }
        None
    }

    fn group_id(&self, subscription: &str, resource_group: &str, name: &str) -> String {
        format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Network/networkSecurityGroups/{name}"
        )
    }

    /// Starts an operation on a rule; answers its status and `Location` URLs.
    fn start_operation(
        &self,
        state: &mut Arm,
        subscription: &str,
        group: (String, String, String),
        rule: &str,
        delete: bool,
    ) -> (String, String) {
        state.next_id += 1;
        let id = format!("{:08x}-0000-4000-8000-{:012x}", state.next_id, state.next_id);
        state.operations.insert(
            id.clone(),
            Operation {
                polls_left: POLLS_IN_PROGRESS,
                failure: state.fail_next_operation.take(),
                group,
                rule: rule.to_ascii_lowercase(),
                delete,
            },
        );
        let host = state.operations_at.clone().unwrap_or_else(|| self.url.clone());
        let base = format!("{host}/subscriptions/{subscription}/providers/Microsoft.Network/locations/{LOCATION}");
        (
            format!("{base}/operations/{id}?api-version=2024-05-01"),
            format!("{base}/operationResults/{id}?api-version=2024-05-01"),
        )
    }

    /// One poll of an operation; once it has ended, its effect has landed.
    fn poll(&self, id: &str) -> Option<Polled> {
        let mut state = self.lock();
        let operation = state.operations.get_mut(id)?;
        if operation.polls_left > 0 {
            operation.polls_left -= 1;
            return Some(Polled::Running);
        }
        let ended = match &operation.failure {
            Some((code, message)) => Polled::Failed(code.clone(), message.clone()),
            None => Polled::Succeeded,
        };
        // The effect lands once; the operation answers the same from then on.
        let (group, rule, delete) = (operation.group.clone(), std::mem::take(&mut operation.rule), operation.delete);
        if let Some(group) = state.groups.get_mut(&group) {
            if delete && matches!(ended, Polled::Succeeded) {
                group.rules.remove(&rule);
            } else if let Some(stored) = group.rules.get_mut(&rule) {
                let outcome = if matches!(ended, Polled::Succeeded) { "Succeeded" } else { "Failed" };
                stored["properties"]["provisioningState"] = json!(outcome);
            }
        }
        Some(ended)
    }
}

/// What a poll of an operation found.
enum Polled {
    Running,
    Succeeded,
    Failed(String, String),
}

fn new_etag() -> String {
    format!("W/\"{}\"", portcullis::domain::new_id())
}

/// A group as the API shows it, its rules carrying the group's ETag.
fn group_json(fake: &FakeArm, subscription: &str, resource_group: &str, group: &Group) -> Value {
    let rules: Vec<Value> = group
        .rules
        .values()
        .map(|rule| {
            let mut rule = rule.clone();
            rule["etag"] = json!(group.etag);
            rule
        })
        .collect();
    json!({
        "name": group.name,
        "id": fake.group_id(subscription, resource_group, &group.name),
        "etag": group.etag,
        "type": "Microsoft.Network/networkSecurityGroups",
        "location": LOCATION,
        "properties": {
            "provisioningState": "Succeeded",
            "securityRules": rules,
            "defaultSecurityRules": [
                {"name": "AllowVnetInBound", "properties": {"priority": 65000, "direction": "Inbound", "access": "Allow",
                 "sourceAddressPrefix": "VirtualNetwork", "destinationAddressPrefix": "VirtualNetwork", "protocol": "*"}},
                {"name": "DenyAllInBound", "properties": {"priority": 65500, "direction": "Inbound", "access": "Deny",
                 "sourceAddressPrefix": "*", "destinationAddressPrefix": "*", "protocol": "*"}}
            ]
        }
    })
}

fn group_not_found(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("The Resource 'Microsoft.Network/networkSecurityGroups/{name}' was not found."),
    )
}

type GroupPath = Path<(String, String, String)>;
type RulePath = Path<(String, String, String, String)>;
type Params = Query<HashMap<String, String>>;

fn api_version_missing(params: &HashMap<String, String>) -> Option<Response> {
    (!params.contains_key("api-version")).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter is required.".into(),
        )
    })
}

async fn read_group(
    State(fake): State<FakeArm>,
    Path((subscription, rg, nsg)): GroupPath,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = fake.enter(&Method::GET, &format!("/{rg}/{nsg}"), &headers).or(api_version_missing(&params))
    {
        return refused;
    }
    let state = fake.lock();
    if state.forbid_reads {
        return error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            "The client does not have authorization to perform action 'Microsoft.Network/networkSecurityGroups/read'."
                .into(),
        );
    }
    match state.groups.get(&key(&subscription, &rg, &nsg)) {
        Some(group) => axum::Json(group_json(&fake, &subscription, &rg, group)).into_response(),
        None => group_not_found(&nsg),
    }
}

async fn read_rule(
    State(fake): State<FakeArm>,
    Path((subscription, rg, nsg, rule)): RulePath,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = fake.enter(&Method::GET, &format!("/{rg}/{nsg}/{rule}"), &headers) {
        return refused;
    }
    let state = fake.lock();
    let Some(group) = state.groups.get(&key(&subscription, &rg, &nsg)) else { return group_not_found(&nsg) };
    match group.rules.get(&rule.to_ascii_lowercase()) {
        Some(found) => {
            let mut found = found.clone();
            found["etag"] = json!(group.etag);
            axum::Json(found).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "NotFound", format!("Resource {rule} not found.")),
    }
}

const PROTOCOLS: &[&str] = &["Tcp", "Udp", "Icmp", "Esp", "Ah", "*"];

/// Why Microsoft.Network would refuse a rule's properties, if it would.
fn invalid(properties: &Value) -> Option<(&'static str, String)> {
    let priority = properties["priority"].as_u64();
    if !priority.is_some_and(|p| (100..=4096).contains(&p)) {
        return Some((
            "SecurityRuleInvalidPriority",
            format!("Security rule has invalid Priority {priority:?}. Value provided: must be between 100 and 4096."),
        ));
    }
    if !properties["protocol"].as_str().is_some_and(|p| PROTOCOLS.contains(&p)) {
        return Some((
            "SecurityRuleInvalidProtocol",
            format!("Security rule has invalid Protocol {}.", properties["protocol"]),
        ));
    }
    if !matches!(properties["direction"].as_str(), Some("Inbound" | "Outbound")) {
        return Some(("InvalidRequestFormat", "Cannot parse the request.".into()));
    }
    if !matches!(properties["access"].as_str(), Some("Allow" | "Deny")) {
        return Some(("InvalidRequestFormat", "Cannot parse the request.".into()));
    }
    let prefixes = properties["sourceAddressPrefixes"].as_array().map_or(0, Vec::len);
    if prefixes == 0 && properties["sourceAddressPrefix"].as_str().is_none() {
        return Some(("SecurityRuleParameterContainsUnsupportedValue", "Security rule must specify SourceAddressPrefixes, SourceAddressPrefix, or SourceApplicationSecurityGroups.".into()));
    }
    None
}

async fn put_rule(
    State(fake): State<FakeArm>,
    Path((subscription, rg, nsg, rule)): RulePath,
    Query(params): Params,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(refused) =
        fake.enter(&Method::PUT, &format!("/{rg}/{nsg}/{rule}"), &headers).or(api_version_missing(&params))
    {
        return refused;
    }
    let mut properties = body["properties"].clone();
    if let Some((code, message)) = invalid(&properties) {
        return error(StatusCode::BAD_REQUEST, code, message);
    }
    let group_key = key(&subscription, &rg, &nsg);
    let mut state = fake.lock();
    let Some(group) = state.groups.get(&group_key) else { return group_not_found(&nsg) };
    let direction = properties["direction"].clone();
    let clash = group.rules.iter().find(|(name, other)| {
        **name != rule.to_ascii_lowercase()
            && other["properties"]["direction"] == direction
            && other["properties"]["priority"] == properties["priority"]
    });
    if let Some((_, other)) = clash {
        return error(
            StatusCode::BAD_REQUEST,
            "SecurityRuleConflict",
            format!(
                "Security rule {rule} conflicts with rule {}. Rules cannot have the same Priority and Direction.",
                other["name"].as_str().unwrap_or_default()
            ),
        );
    }
    let created = !group.rules.contains_key(&rule.to_ascii_lowercase());
    properties["provisioningState"] = json!("Updating");
    let id = format!("{}/securityRules/{rule}", fake.group_id(&subscription, &rg, &nsg));
    let stored = json!({"name": rule, "id": id, "type": "Microsoft.Network/networkSecurityGroups/securityRules", "properties": properties});
    let (status_url, location) = fake.start_operation(&mut state, &subscription, group_key.clone(), &rule, false);
    let location_only = state.location_only;
    let group = state.groups.get_mut(&group_key).unwrap();
    group.rules.insert(rule.to_ascii_lowercase(), stored.clone());
    group.etag = new_etag();
    let mut answer = stored;
    answer["etag"] = json!(group.etag);
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let mut response = (status, axum::Json(answer)).into_response();
    let headers = response.headers_mut();
    if location_only {
        headers.insert("location", location.parse().unwrap());
    } else {
        headers.insert("azure-asyncoperation", status_url.parse().unwrap());
    }
    headers.insert("retry-after", "10".parse().unwrap());
    response
}

async fn delete_rule(
    State(fake): State<FakeArm>,
    Path((subscription, rg, nsg, rule)): RulePath,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) =
        fake.enter(&Method::DELETE, &format!("/{rg}/{nsg}/{rule}"), &headers).or(api_version_missing(&params))
    {
        return refused;
    }
    let group_key = key(&subscription, &rg, &nsg);
    let mut state = fake.lock();
    let Some(group) = state.groups.get_mut(&group_key) else { return group_not_found(&nsg) };
    if !group.rules.contains_key(&rule.to_ascii_lowercase()) {
        return StatusCode::NO_CONTENT.into_response();
    }
    group.etag = new_etag();
    if let Some(stored) = group.rules.get_mut(&rule.to_ascii_lowercase()) {
        stored["properties"]["provisioningState"] = json!("Deleting");
    }
    let (status_url, location) = fake.start_operation(&mut state, &subscription, group_key, &rule, true);
    let location_only = state.location_only;
    let mut response = StatusCode::ACCEPTED.into_response();
    let headers = response.headers_mut();
    if !location_only {
        headers.insert("azure-asyncoperation", status_url.parse().unwrap());
    }
    headers.insert("location", location.parse().unwrap());
    headers.insert("retry-after", "10".parse().unwrap());
    response
}

async fn operation(
    State(fake): State<FakeArm>,
    Path((_, _, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = fake.enter(&Method::GET, &format!("/operations/{id}"), &headers) {
        return refused;
    }
    let body = match fake.poll(&id) {
        Some(Polled::Running) => json!({"status": "InProgress"}),
        Some(Polled::Succeeded) => json!({"status": "Succeeded"}),
        Some(Polled::Failed(code, message)) => json!({"status": "Failed", "error": {"code": code, "message": message}}),
        None => return error(StatusCode::NOT_FOUND, "NotFound", format!("Operation {id} not found.")),
    };
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert("retry-after", "10".parse().unwrap());
    response
}

async fn operation_result(
    State(fake): State<FakeArm>,
    Path((_, _, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = fake.enter(&Method::GET, &format!("/operationResults/{id}"), &headers) {
        return refused;
    }
    match fake.poll(&id) {
        Some(Polled::Succeeded) => StatusCode::NO_CONTENT.into_response(),
        Some(Polled::Running) => StatusCode::ACCEPTED.into_response(),
        Some(Polled::Failed(code, message)) => error(StatusCode::BAD_REQUEST, &code, message),
        None => error(StatusCode::NOT_FOUND, "NotFound", format!("Operation {id} not found.")),
    }
}

async fn permissions(State(fake): State<FakeArm>, headers: HeaderMap) -> Response {
    if let Some(refused) = fake.enter(&Method::GET, "/permissions", &headers) {
        return refused;
    }
    let (actions, not_actions) = fake.lock().permissions.clone();
    axum::Json(
        json!({"value": [{"actions": actions, "notActions": not_actions, "dataActions": [], "notDataActions": []}]}),
    )
    .into_response()
}

/// Entra ID's client-credentials grant: a token for the right secret, AADSTS7000215 otherwise.
async fn token(State(fake): State<FakeArm>, body: String) -> Response {
    let form: HashMap<String, String> = url_form(&body);
    let mut state = fake.lock();
    let right = state
        .client_secret
        .as_deref()
        .is_some_and(|secret| form.get("client_secret").map(String::as_str) == Some(secret));
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") || !right {
        let body = json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.",
                          "error_codes": [7000215]});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    state.next_id += 1;
    let token = format!("fake-arm-token-{}", state.next_id);
    state.tokens.push(token.clone());
    axum::Json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}))
        .into_response()
}

/// A form body's fields (the test client sends only URL-safe values, `%2F` and `+` aside).
fn url_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.replace('+', " ").replace("%2F", "/").replace("%3A", ":")))
        .collect()
}
