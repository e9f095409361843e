//! A fake of the Compute Engine REST endpoints the GCP provider uses — firewalls
//! get/list/insert/patch/delete and global operations get/wait — faithful where it matters:
//! writes answer a PENDING operation and take effect only when it finishes (a few ms later, like
//! the real API's asynchrony), PATCH is a JSON merge patch (a list replaces the whole list), a
//! missing rule is 404, a duplicate name 409, a repeated `requestId` answers the first operation
//! without acting twice, and 403 `rateLimitExceeded` can be injected.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long an operation stays PENDING, then RUNNING, before it is DONE.
const STEP: Duration = Duration::from_millis(15);

#[derive(Clone)]
pub struct FakeCompute {
    pub url: String,
    state: Arc<Mutex<Compute>>,
}

#[derive(Default)]
struct Compute {
    /// (project, rule name) → rule.
    firewalls: BTreeMap<(String, String), Value>,
    /// Operation name → operation.
    operations: HashMap<String, Value>,
    /// requestId → operation name.
    requests: HashMap<String, String>,
    next_id: u64,
    rate_limited: u32,
    /// Writes (insert, patch, delete) allowed at once and per second, the tokens left and when;
    /// beyond them writes are refused as Compute refuses a project past its quota.
    write_quota: Option<(f64, f64, f64, std::time::Instant)>,
    refused_writes: usize,
    /// Every request, as "METHOD path".
    calls: Vec<String>,
}

enum Effect {
    Put(String, String, Value),
    Merge(String, String, Value),
    Delete(String, String),
}

fn error(status: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}]}});
    (status, axum::Json(body)).into_response()
}

/// RFC 7386: objects merge key by key, null removes, anything else (lists too) replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

impl FakeCompute {
    pub async fn start() -> FakeCompute {
        let state = Arc::new(Mutex::new(Compute::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakeCompute { url, state };
        let app = Router::new()
            .route("/compute/v1/projects/{project}/global/firewalls", get(list).post(insert))
            .route("/compute/v1/projects/{project}/global/firewalls/{name}", get(read).patch(patch).delete(delete))
            .route("/compute/v1/projects/{project}/global/operations/{operation}", get(operation))
            .route("/compute/v1/projects/{project}/global/operations/{operation}/wait", post(operation))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Compute> {
        self.state.lock().unwrap()
    }

    /// A rule as the API would return it.
    pub fn rule(&self, project: &str, name: &str) -> Option<Value> {
        self.lock().firewalls.get(&(project.to_owned(), name.to_owned())).cloned()
    }

    /// Every rule name of a project.
    pub fn rule_names(&self, project: &str) -> Vec<String> {
        self.lock().firewalls.keys().filter(|(p, _)| p == project).map(|(_, name)| name.clone()).collect()
    }

    /// Creates or replaces a rule directly, as someone working in the console would.
    pub fn put_rule(&self, project: &str, rule: Value) {
        let name = rule["name"].as_str().unwrap().to_owned();
        self.lock().firewalls.insert((project.to_owned(), name), rule);
    }

    /// Deletes a rule directly, as someone working in the console would; answers whether it existed.
    pub fn remove_rule(&self, project: &str, name: &str) -> bool {
        self.lock().firewalls.remove(&(project.to_owned(), name.to_owned())).is_some()
    }

    /// The next `count` requests answer 403 rateLimitExceeded.
    pub fn rate_limit_next(&self, count: u32) {
        self.lock().rate_limited = count;
    }

    /// From now on, writes beyond a bucket of `burst` writes refilled at `per_second` are
    /// refused with 403 rateLimitExceeded.
    pub fn limit_writes(&self, burst: u32, per_second: f64) {
        let burst = f64::from(burst);
        self.lock().write_quota = Some((burst, per_second, burst, std::time::Instant::now()));
    }

    /// How many writes the quota refused.
    pub fn refused_writes(&self) -> usize {
        self.lock().refused_writes
    }

    /// The requests received so far, as "METHOD path".
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Records the call; answers the injected throttling if any is due.
    fn enter(&self, method: &Method, path: &str) -> Option<Response> {
        let mut state = self.lock();
        state.calls.push(format!("{method} {path}"));
        if state.rate_limited > 0 {
            state.rate_limited -= 1;
            return Some(error(StatusCode::FORBIDDEN, "rateLimitExceeded", "Rate Limit Exceeded".into()));
        }
        let write = [Method::POST, Method::PATCH, Method::DELETE].contains(method);
        if let Some((burst, per_second, tokens, since)) = state.write_quota.as_mut().filter(|_| write) {
            let now = std::time::Instant::now();
            *tokens = (*tokens + now.duration_since(*since).as_secs_f64() * *per_second).min(*burst);
            *since = now;
            if *tokens < 1.0 {
                state.refused_writes += 1;
                return Some(error(StatusCode::FORBIDDEN, "rateLimitExceeded", "Rate Limit Exceeded".into()));
            }
            *tokens -= 1.0;
        }
        None
    }

    /// Starts an operation whose `effect` lands when it is DONE; a known `requestId` answers
    /// its earlier operation instead.
    fn operate(
        &self,
        project: &str,
        kind: &str,
        target: &str,
        request_id: Option<&String>,
        effect: Effect,
    ) -> Response {
        let mut state = self.lock();
        if let Some(known) = request_id.and_then(|id| state.requests.get(id)) {
            return axum::Json(state.operations[known].clone()).into_response();
        }
        state.next_id += 1;
        let id = 7_000_000_000_000_000_000 + state.next_id;
        let name = format!("operation-{id}");
        let base = format!("{}/compute/v1/projects/{project}/global", self.url);
        let operation = json!({
            "kind": "compute#operation", "id": id.to_string(), "name": name,
            "operationType": kind, "status": "PENDING", "progress": 0,
            "targetLink": format!("{base}/firewalls/{target}"),
            "selfLink": format!("{base}/operations/{name}"),
        });
        state.operations.insert(name.clone(), operation.clone());
        if let Some(request_id) = request_id {
            state.requests.insert(request_id.clone(), name.clone());
        }
        drop(state);
        let fake = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(STEP).await;
            fake.lock().operations.get_mut(&name).unwrap()["status"] = json!("RUNNING");
            tokio::time::sleep(STEP).await;
            let mut state = fake.lock();
            match effect {
                Effect::Put(project, rule, value) => {
                    state.firewalls.insert((project, rule), value);
                }
                Effect::Merge(project, rule, patch) => {
                    if let Some(current) = state.firewalls.get_mut(&(project, rule)) {
                        merge(current, &patch);
                    }
                }
                Effect::Delete(project, rule) => {
                    state.firewalls.remove(&(project, rule));
                }
            }
            let operation = state.operations.get_mut(&name).unwrap();
            operation["status"] = json!("DONE");
            operation["progress"] = json!(100);
        });
        axum::Json(operation).into_response()
    }
}

type Params = Query<HashMap<String, String>>;

async fn list(State(fake): State<FakeCompute>, Path(project): Path<String>) -> Response {
    if let Some(denied) = fake.enter(&Method::GET, &format!("/{project}/firewalls")) {
        return denied;
    }
    let items: Vec<Value> =
        fake.lock().firewalls.iter().filter(|((p, _), _)| *p == project).map(|(_, rule)| rule.clone()).collect();
    axum::Json(json!({"kind": "compute#firewallList", "items": items})).into_response()
}

async fn read(State(fake): State<FakeCompute>, Path((project, name)): Path<(String, String)>) -> Response {
    if let Some(denied) = fake.enter(&Method::GET, &format!("/{project}/firewalls/{name}")) {
        return denied;
    }
    match fake.rule(&project, &name) {
        Some(rule) => axum::Json(rule).into_response(),
        None => not_found(&project, &name),
    }
}

fn not_found(project: &str, name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "notFound",
        format!("The resource 'projects/{project}/global/firewalls/{name}' was not found"),
    )
}

async fn insert(
    State(fake): State<FakeCompute>,
    Path(project): Path<String>,
    Query(params): Params,
    axum::Json(mut rule): axum::Json<Value>,
) -> Response {
    if let Some(denied) = fake.enter(&Method::POST, &format!("/{project}/firewalls")) {
        return denied;
    }
    let Some(name) = rule["name"].as_str().map(str::to_owned) else {
        return error(StatusCode::BAD_REQUEST, "required", "Required field 'resource.name' not specified".into());
    };
    if fake.rule(&project, &name).is_some()
        && !params.get("requestId").is_some_and(|id| fake.lock().requests.contains_key(id))
    {
        return error(
            StatusCode::CONFLICT,
            "alreadyExists",
            format!("The resource 'projects/{project}/global/firewalls/{name}' already exists"),
        );
    }
    rule["kind"] = json!("compute#firewall");
    rule["selfLink"] = json!(format!("{}/compute/v1/projects/{project}/global/firewalls/{name}", fake.url));
    fake.operate(&project, "insert", &name, params.get("requestId"), Effect::Put(project.clone(), name.clone(), rule))
}

async fn patch(
    State(fake): State<FakeCompute>,
    Path((project, name)): Path<(String, String)>,
    Query(params): Params,
    axum::Json(changes): axum::Json<Value>,
) -> Response {
    if let Some(denied) = fake.enter(&Method::PATCH, &format!("/{project}/firewalls/{name}")) {
        return denied;
    }
    if fake.rule(&project, &name).is_none() {
        return not_found(&project, &name);
    }
    fake.operate(
        &project,
        "patch",
        &name,
        params.get("requestId"),
        Effect::Merge(project.clone(), name.clone(), changes),
    )
}

async fn delete(
    State(fake): State<FakeCompute>,
    Path((project, name)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    if let Some(denied) = fake.enter(&Method::DELETE, &format!("/{project}/firewalls/{name}")) {
        return denied;
    }
    if fake.rule(&project, &name).is_none() {
        return not_found(&project, &name);
    }
    fake.operate(&project, "delete", &name, params.get("requestId"), Effect::Delete(project.clone(), name.clone()))
}

async fn operation(
    State(fake): State<FakeCompute>,
    method: Method,
    Path((project, operation)): Path<(String, String)>,
) -> Response {
    if let Some(denied) = fake.enter(&method, &format!("/{project}/operations/{operation}")) {
        return denied;
    }
    // `wait` holds the call until the operation is DONE, as the real endpoint does (briefly).
    for _ in 0..100 {
        let done = fake.lock().operations.get(&operation).is_none_or(|op| op["status"] == "DONE");
        if done || method != Method::POST {
            break;
        }
        tokio::time::sleep(STEP).await;
    }
    let found = fake.lock().operations.get(&operation).cloned();
    match found {
        Some(operation) => axum::Json(operation).into_response(),
        None => {
            error(StatusCode::NOT_FOUND, "notFound", format!("The resource 'operations/{operation}' was not found"))
        }
    }
}
