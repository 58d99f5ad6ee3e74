//! The HTTP API: the router, its handlers, and the metrics middleware. Handlers check what
//! they can (JSON, sizes, names) and hand the rest to the engine's thread.

use super::body::{read_body, rejected};
use super::conn::Client;
use super::error::{json_response, ApiError};
use super::metrics::{Metrics, PREDICT_ROUTE};
use super::registry::{check_new_name, unknown_prompt, Catalog};
use super::worker::{Job, Msg, Waiting};
use super::Limits;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use softprompt::Prompt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// What every handler shares.
pub struct Shared {
    pub tx: Sender<Msg>,
    pub catalog: Catalog,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub model: PathBuf,
    pub device: String,
    pub waiting: Waiting,
    /// the engine's thread runs its loop
    pub engine_running: Arc<AtomicBool>,
}

type AppState = Arc<Shared>;
type Answer = Result<Response, ApiError>;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/prompts", get(list_prompts).post(load_prompt))
        .route("/v1/prompts/{name}", axum::routing::delete(unload_prompt))
        .route(PREDICT_ROUTE, post(predict))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        // inside the limit, so that it reads the body with it
        .layer(middleware::from_fn_with_state(state.limits, read_body))
        .layer(DefaultBodyLimit::max(state.limits.max_request_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// Counts every answer by route and status, and times the predictions.
async fn count(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = route_of(req.uri().path());
    let start = Instant::now();
    let resp = next.run(req).await;
    s.metrics
        .request(route, resp.status().as_u16(), start.elapsed());
    resp
}

/// The route a path belongs to, as a metric label (prompt names left out, so that the
/// labels stay few).
fn route_of(path: &str) -> &'static str {
    match path {
        "/health" => "/health",
        "/metrics" => "/metrics",
        "/v1/prompts" => "/v1/prompts",
        PREDICT_ROUTE => PREDICT_ROUTE,
        p if p.starts_with("/v1/prompts/") => "/v1/prompts/{name}",
        _ => "other",
    }
}

/// 200 `"ok"` while the engine runs; 503 `"engine stopped"` once its thread has ended (a
/// health check that only asked the HTTP side said "ok" over a dead engine).
async fn health(State(s): State<AppState>) -> Response {
    let (status, word) = match s.engine_running.load(Ordering::SeqCst) {
        true => (StatusCode::OK, "ok"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "engine stopped"),
    };
    let body = json!({
        "status": word,
        "model": s.model,
        "device": s.device,
        "prompts": s.catalog.list().len(),
    });
    json_response(status, &body)
}

async fn metrics(State(s): State<AppState>) -> Response {
    let headers = [(header::CONTENT_TYPE, "text/plain; version=0.0.4")];
    (StatusCode::OK, headers, s.metrics.render()).into_response()
}

async fn list_prompts(State(s): State<AppState>) -> Response {
    json_response(StatusCode::OK, &json!({ "prompts": s.catalog.list() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    name: String,
    /// a prompt folder on the server's machine
    path: PathBuf,
}

async fn load_prompt(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Answer {
    let req: LoadRequest = parse(body, &s.limits)?;
    check_new_name(&req.name, &s.catalog)?;
    // "" was read as a folder and answered ": no such folder" (hostile pass 34, F1)
    if req.path.as_os_str().is_empty() {
        return Err(ApiError::bad_request(
            "\"path\" is empty: expected a prompt folder on the server's machine",
        ));
    }
    // the folder is read here, off the engine's thread: a slow disk holds this request
    // only, never the engine and the requests queued behind the load
    let (name, path) = (req.name, req.path);
    let dir = path.clone();
    let prompt = tokio::task::spawn_blocking(move || Prompt::load(dir))
        .await
        .map_err(|e| ApiError::internal(format!("reading the prompt folder stopped: {e}")))?
        .map_err(|e| ApiError::from_load(&e))?;
    let (reply, answer) = oneshot::channel();
    let load = Msg::Load {
        name,
        path,
        prompt: Box::new(prompt),
        reply,
    };
    send(&s, load)?;
    let loaded = wait(answer).await?;
    let body = json!({ "loaded": loaded.info, "warnings": loaded.warnings });
    Ok(json_response(StatusCode::CREATED, &body))
}

async fn unload_prompt(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Answer {
    let Path(name) = name.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (reply, answer) = oneshot::channel();
    send(&s, Msg::Unload { name, reply })?;
    let info = wait(answer).await?;
    Ok(json_response(StatusCode::OK, &json!({ "unloaded": info })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    prompt: String,
    texts: Vec<String>,
}

async fn predict(
    State(s): State<AppState>,
    Extension(client): Extension<Client>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let arrived = Instant::now();
    let req: PredictRequest = parse(body, &s.limits)?;
    s.limits.check_texts(&req.texts)?;
    if !s.catalog.contains(&req.prompt) {
        return Err(unknown_prompt(&req.prompt, &s.catalog));
    }
    let (reply, answer) = oneshot::channel();
    let prompt = req.prompt.clone();
    let job = Job {
        prompt: req.prompt,
        texts: req.texts,
        arrived,
        reply,
    };
    send(&s, Msg::Predict(job))?;
    // a client that reset its connection is not waited for: the answer's receiver dropped
    // here tells the engine, which skips the request unless it ran already
    let predictions = tokio::select! {
        predictions = wait(answer) => predictions?,
        () = client.reset() => return Err(client_gone()),
    };
    let body = json!({ "prompt": prompt, "predictions": predictions });
    Ok(json_response(StatusCode::OK, &body))
}

async fn no_route(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route {}: the API is GET /health, GET /metrics, GET and POST /v1/prompts, \
         DELETE /v1/prompts/{{name}}, POST /v1/predict",
        req.uri().path()
    ))
}

async fn wrong_method(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not served on {}", req.method(), req.uri().path()),
    )
}

/// The body as JSON of `T`: 413 past --max-request-bytes, 400 for anything that is not `T`.
fn parse<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limits: &Limits,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| rejected(&r, limits))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        // a lone surrogate (`\ud800`, which Python's json.dumps writes) is no character
        let hint = match e.to_string().contains("hex escape") {
            true => ": a lone UTF-16 surrogate such as \\ud800 is not a Unicode character",
            false => "",
        };
        ApiError::bad_request(format!("bad JSON: {e}{hint}"))
    })
}

/// Hands a message to the engine without waiting: 503 when `--max-queue` requests already
/// wait or it stopped.
fn send(s: &Shared, msg: Msg) -> Result<(), ApiError> {
    if !s.waiting.enter() {
        return Err(queue_full());
    }
    s.tx.send(msg).map_err(|_| {
        s.waiting.leave(1);
        match s.engine_running.load(Ordering::SeqCst) {
            true => ApiError::unavailable("the server is shutting down"),
            false => ApiError::internal("the engine stopped (its error is on the server's stderr)"),
        }
    })
}

/// What a request whose client reset its connection is counted as (nginx's "client closed
/// request"); no one reads it.
fn client_gone() -> ApiError {
    let status = StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST);
    ApiError::new(status, "the client reset its connection before its answer")
}

fn queue_full() -> ApiError {
    ApiError::unavailable("the engine's queue is full (--max-queue requests wait): retry later")
}

/// The engine's answer to one message.
async fn wait<T>(answer: oneshot::Receiver<Result<T, ApiError>>) -> Result<T, ApiError> {
    answer
        .await
        .map_err(|_| ApiError::internal("the engine stopped before answering"))?
}
