//! `ferroflow explore`: a local web server for learning and debugging flow matching in the browser.
//!
//! One page (HTML, JavaScript on plain canvases, CSS), built into the binary with `include_str!`, and a JSON
//! API: closed-form views of Gaussian-mixture targets under any path ([`views`]), live training with the
//! real engine streamed as server-sent events ([`training`]), and the learned field of trained runs chosen
//! by name from the runs folder with their learned log-density and a trajectory's `ln rho` ([`runs`]), and
//! mode-seeking guidance on closed-form fields and runs, with Hutchinson's spread and the estimators' measured
//! cost ([`mode_seeking`]), classifier-free guidance on labelled targets and class-conditional runs
//! ([`classifier_free`]), and DDPM's ancestral sampler beside the ODE samplers ([`ancestral`]). Every endpoint validates its input and refuses with a 4xx JSON
//! answer naming the field ([`error`]); bodies are limited to [`MAX_BODY_BYTES`]; nothing from the page
//! reaches a shell or names a file.
//!
//! Heavy computations run on tokio's blocking threads, at most [`MAX_COMPUTATIONS`] at once, so the server
//! keeps answering while they run.

pub mod ancestral;
pub mod classifier_free;
pub mod error;
pub mod mode_seeking;
pub mod runs;
pub mod training;
pub mod views;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::training::{TrainEvent, TrainRequest, Training, check_client, run_training};

/// The largest request body accepted (a drawn target of 2,000 points fits with room to spare).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Computations (views, trajectories, couplings, run views) running at once; others wait their turn.
pub const MAX_COMPUTATIONS: usize = 2;
/// Trainings running at once over all clients.
pub const MAX_TRAININGS: usize = 2;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// What the server needs to know.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The runs folder: trainings write here, the page lists and opens runs from here by name.
    pub runs_dir: PathBuf,
    /// A run (by name under `runs_dir`) the page opens at start.
    pub initial_run: Option<String>,
}

/// The server's shared state.
pub struct AppState {
    config: ServerConfig,
    computations: Semaphore,
    trainings: Mutex<HashMap<String, Training>>,
}

impl AppState {
    /// The clients training now.
    pub fn training_clients(&self) -> Vec<String> {
        self.trainings
            .lock()
            .expect("the trainings map is never poisoned")
            .keys()
            .cloned()
            .collect()
    }
}

/// The page and its API.
pub fn router(config: ServerConfig) -> (Router, Arc<AppState>) {
    let state = Arc::new(AppState {
        config,
        computations: Semaphore::new(MAX_COMPUTATIONS),
        trainings: Mutex::new(HashMap::new()),
    });
    let router = Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/api/options", get(options))
        .route("/api/flow", post(flow))
        .route("/api/trajectory", post(trajectory))
        .route("/api/coupling", post(coupling))
        .route("/api/run_view", post(run_view))
        .route("/api/run_density", post(run_density))
        .route("/api/run_trajectory", post(run_trajectory))
        .route("/api/run_density_frames", post(run_density_frames))
        .route("/api/mode_seeking", post(mode_seeking))
        .route("/api/classifier_free", post(classifier_free))
        .route("/api/train", post(train))
        .route("/api/train/stop", post(stop_training))
        .fallback(|| async {
            ApiError::NotFound {
                field: "path".into(),
                message: "no such page or endpoint".into(),
            }
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state.clone());
    (router, state)
}

/// Serves the explorer on `addr` until the process ends; `on_ready` gets the bound address (port 0 picks a
/// free one).
pub async fn serve(
    config: ServerConfig,
    addr: SocketAddr,
    on_ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    on_ready(listener.local_addr()?);
    let (router, _) = router(config);
    axum::serve(listener, router).await
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

type Shared = State<Arc<AppState>>;

async fn options(State(state): Shared) -> Json<serde_json::Value> {
    let runs_dir = state.config.runs_dir.clone();
    let runs = tokio::task::spawn_blocking(move || runs::list_runs(&runs_dir))
        .await
        .unwrap_or_default();
    Json(serde_json::json!({
        "targets": views::TARGETS,
        "paths": views::PATHS,
        "schedulers": views::SCHEDULERS,
        "couplings": training::COUPLINGS,
        "sources": training::SOURCES,
        "samplers": mode_seeking::SAMPLERS,
        "flow_samplers": views::FLOW_SAMPLERS,
        "schedules": mode_seeking::SCHEDULES,
        "run_samplers": [mode_seeking::SAMPLERS[0], mode_seeking::SAMPLERS[1], ancestral::DDPM],
        "predictions": training::PREDICTIONS,
        "classes": {"8gaussians": 8, "moons": 2, "mixtures": views::mixtures_preset().weights.len()},
        "runs": runs,
        "initial_run": state.config.initial_run,
        "window": views::WINDOW,
        "t_max": views::T_MAX,
    }))
}

/// Runs `work` on a blocking thread once a computation slot is free.
async fn compute<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = state
        .computations
        .acquire()
        .await
        .map_err(|_| ApiError::Internal("the server is shutting down".into()))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("the computation failed: {e}")))?
}

async fn flow(
    State(state): Shared,
    body: Result<Json<views::FlowRequest>, JsonRejection>,
) -> Result<Json<views::FlowFrames>, ApiError> {
    let Json(request) = body?;
    Ok(Json(compute(&state, move || views::flow_frames(&request)).await?))
}

async fn trajectory(
    State(state): Shared,
    body: Result<Json<views::TrajectoryRequest>, JsonRejection>,
) -> Result<Json<views::Trajectory>, ApiError> {
    let Json(request) = body?;
    Ok(Json(compute(&state, move || views::trajectory(&request)).await?))
}

async fn coupling(
    State(state): Shared,
    body: Result<Json<views::CouplingRequest>, JsonRejection>,
) -> Result<Json<views::Couplings>, ApiError> {
    let Json(request) = body?;
    Ok(Json(compute(&state, move || views::couplings(&request)).await?))
}

async fn run_view(
    State(state): Shared,
    body: Result<Json<runs::RunViewRequest>, JsonRejection>,
) -> Result<Json<runs::RunFrames>, ApiError> {
    let Json(request) = body?;
    let runs_dir = state.config.runs_dir.clone();
    Ok(Json(
        compute(&state, move || runs::run_frames(&runs_dir, &request)).await?,
    ))
}

async fn run_density(
    State(state): Shared,
    body: Result<Json<runs::RunDensityRequest>, JsonRejection>,
) -> Result<Json<runs::RunDensity>, ApiError> {
    let Json(request) = body?;
    let runs_dir = state.config.runs_dir.clone();
    Ok(Json(
        compute(&state, move || runs::run_density(&runs_dir, &request)).await?,
    ))
}

async fn run_trajectory(
    State(state): Shared,
    body: Result<Json<runs::RunTrajectoryRequest>, JsonRejection>,
) -> Result<Json<runs::RunTrajectory>, ApiError> {
    let Json(request) = body?;
    let runs_dir = state.config.runs_dir.clone();
    Ok(Json(
        compute(&state, move || runs::run_trajectory(&runs_dir, &request)).await?,
    ))
}

async fn run_density_frames(
    State(state): Shared,
    body: Result<Json<runs::RunDensityFramesRequest>, JsonRejection>,
) -> Result<Json<runs::RunDensityFrames>, ApiError> {
    let Json(request) = body?;
    let runs_dir = state.config.runs_dir.clone();
    Ok(Json(
        compute(&state, move || runs::run_density_frames(&runs_dir, &request)).await?,
    ))
}

async fn mode_seeking(
    State(state): Shared,
    body: Result<Json<mode_seeking::ModeSeekingRequest>, JsonRejection>,
) -> Result<Json<mode_seeking::ModeSeekingView>, ApiError> {
    let Json(request) = body?;
    let runs_dir = state.config.runs_dir.clone();
    Ok(Json(
        compute(&state, move || mode_seeking::mode_seeking(&runs_dir, &request)).await?,
    ))
}

async fn classifier_free(
    State(state): Shared,
    body: Result<Json<classifier_free::ClassifierFreeRequest>, JsonRejection>,
) -> Result<Json<classifier_free::ClassifierFreeView>, ApiError> {
    let Json(request) = body?;
    let runs_dir = state.config.runs_dir.clone();
    Ok(Json(
        compute(&state, move || {
            classifier_free::classifier_free(&runs_dir, &request)
        })
        .await?,
    ))
}

/// Raises a training's stop flag when the page's stream goes away, and forgets the client.
struct StopOnDrop {
    stop: Arc<AtomicBool>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn train(
    State(state): Shared,
    body: Result<Json<TrainRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let config = request.run_config(&state.config.runs_dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let mut trainings = state
            .trainings
            .lock()
            .expect("the trainings map is never poisoned");
        if trainings.contains_key(&request.client) {
            return Err(ApiError::Busy {
                field: "client".into(),
                message: "this client is already training; stop it first".into(),
            });
        }
        if trainings.len() >= MAX_TRAININGS {
            return Err(ApiError::Busy {
                field: "client".into(),
                message: format!("{MAX_TRAININGS} trainings are running; try again when one ends"),
            });
        }
        trainings.insert(request.client.clone(), Training { stop: stop.clone() });
    }
    let (sender, receiver) = mpsc::channel::<TrainEvent>(64);
    let client = request.client.clone();
    let training_state = state.clone();
    let training_stop = stop.clone();
    tokio::task::spawn_blocking(move || {
        run_training(config, training_stop, sender);
        training_state
            .trainings
            .lock()
            .expect("the trainings map is never poisoned")
            .remove(&client);
    });
    let guard = StopOnDrop { stop };
    let events = ReceiverStream::new(receiver).map(move |event| {
        // The stream owns the guard: when the page goes away, the stream is dropped and training stops.
        let _owner = &guard;
        let name = match &event {
            TrainEvent::Started { .. } => "started",
            TrainEvent::Progress { .. } => "progress",
            TrainEvent::Note { .. } => "note",
            TrainEvent::Snapshot { .. } => "snapshot",
            TrainEvent::Finished { .. } => "finished",
        };
        Ok::<_, Infallible>(
            Event::default()
                .event(name)
                .json_data(&event)
                .unwrap_or_else(|_| Event::default().event(name)),
        )
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(2)))
        .into_response())
}

/// A request to stop a client's training.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StopRequest {
    client: String,
}

async fn stop_training(
    State(state): Shared,
    body: Result<Json<StopRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(request) = body?;
    check_client(&request.client)?;
    let trainings = state
        .trainings
        .lock()
        .expect("the trainings map is never poisoned");
    let Some(training) = trainings.get(&request.client) else {
        return Err(ApiError::NotFound {
            field: "client".into(),
            message: "this client has no training running".into(),
        });
    };
    training.stop.store(true, Ordering::SeqCst);
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "stopping": true })),
    ))
}
