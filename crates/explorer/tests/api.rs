//! The explorer's endpoints against bad input (each refused with a 4xx JSON answer naming the field, the
//! server serving on), its closed forms against the paths crate, and the training rules: one training per
//! client, Stop ends it, and a training stops when its page's stream goes away.

use std::path::Path;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use ferroflow_explorer::{MAX_BODY_BYTES, ServerConfig, router};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

fn app(runs_dir: &Path) -> Router {
    router(ServerConfig {
        runs_dir: runs_dir.to_path_buf(),
        initial_run: None,
    })
    .0
}

async fn post(app: &Router, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let value =
        serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

async fn post_json(app: &Router, path: &str, body: &Value) -> (StatusCode, Value) {
    post(app, path, body.to_string()).await
}

fn flow_request() -> Value {
    json!({
        "target": { "kind": "8gaussians" },
        "path": { "kind": "affine", "scheduler": "cond_ot", "sigma": 0.0 },
        "n_particles": 50, "grid": 8, "density_grid": 8, "frames": 5, "seed": 1
    })
}

fn train_request(client: &str, steps: i64) -> Value {
    json!({
        "client": client,
        "target": { "kind": "8gaussians" },
        "path": { "kind": "affine", "sigma": 0.0 },
        "coupling": "independent",
        "width": 16, "depth": 1, "steps": steps, "batch_size": 32, "learning_rate": 0.001, "seed": 3
    })
}

/// A training that takes far longer than the test waits (the largest network and batch the server allows).
fn long_train_request(client: &str) -> Value {
    let mut request = train_request(client, 20_000);
    request["width"] = json!(256);
    request["depth"] = json!(6);
    request["batch_size"] = json!(1024);
    request
}

/// Sets `pointer` of `base` to `value` and checks that the endpoint refuses it with `status`, naming `field`.
async fn refuses(app: &Router, path: &str, base: &Value, pointer: &str, value: Value, field: &str) {
    let mut body = base.clone();
    *body.pointer_mut(pointer).unwrap() = value.clone();
    let (status, answer) = post_json(app, path, &body).await;
    assert!(
        status.is_client_error(),
        "{path} {pointer}={value}: status {status}, answer {answer}"
    );
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(field) || answer["field"] == field,
        "{path} {pointer}={value}: the answer {answer} does not name `{field}`"
    );
}

#[tokio::test]
async fn every_endpoint_refuses_bad_input_and_the_server_serves_on() {
    let runs = tempdir("bad-input");
    let app = app(&runs);
    let flow = flow_request();
    refuses(
        &app,
        "/api/flow",
        &flow,
        "/target/kind",
        json!("spiral"),
        "target.kind",
    )
    .await;
    refuses(
        &app,
        "/api/flow",
        &flow,
        "/path/kind",
        json!("straight"),
        "path.kind",
    )
    .await;
    refuses(
        &app,
        "/api/flow",
        &flow,
        "/path/scheduler",
        json!("linear"),
        "path.scheduler",
    )
    .await;
    refuses(&app, "/api/flow", &flow, "/path/sigma", json!(-1.0), "path.sigma").await;
    refuses(&app, "/api/flow", &flow, "/n_particles", json!(-5), "n_particles").await;
    refuses(
        &app,
        "/api/flow",
        &flow,
        "/n_particles",
        json!(1_000_000_000),
        "n_particles",
    )
    .await;
    refuses(&app, "/api/flow", &flow, "/grid", json!(0), "grid").await;
    refuses(&app, "/api/flow", &flow, "/frames", json!(100_000), "frames").await;
    refuses(
        &app,
        "/api/flow",
        &flow,
        "/density_grid",
        json!("many"),
        "density_grid",
    )
    .await;
    // A drawn target: NaN arrives as JSON null (what JSON.stringify makes of it), points outside the window.
    let drawn = json!({ "kind": "drawn", "points": [[0.0, 1.0], [0.5, 0.5]] });
    let mut with_drawn = flow.clone();
    with_drawn["target"] = drawn;
    refuses(
        &app,
        "/api/flow",
        &with_drawn,
        "/target/points/1/0",
        Value::Null,
        "target.points[1][0]",
    )
    .await;
    refuses(
        &app,
        "/api/flow",
        &with_drawn,
        "/target/points/0/1",
        json!(1e6),
        "target.points[0][1]",
    )
    .await;
    refuses(
        &app,
        "/api/flow",
        &with_drawn,
        "/target/points",
        json!([]),
        "target.points",
    )
    .await;

    let trajectory = json!({
        "target": { "kind": "mixtures" }, "path": { "kind": "affine" }, "start": [0.5, -0.5], "steps": 100
    });
    refuses(
        &app,
        "/api/trajectory",
        &trajectory,
        "/start/0",
        Value::Null,
        "start[0]",
    )
    .await;
    refuses(
        &app,
        "/api/trajectory",
        &trajectory,
        "/start/1",
        json!(1e300),
        "start[1]",
    )
    .await;
    refuses(&app, "/api/trajectory", &trajectory, "/steps", json!(-1), "steps").await;
    refuses(
        &app,
        "/api/trajectory",
        &trajectory,
        "/steps",
        json!(10_000_000),
        "steps",
    )
    .await;

    let coupling = json!({ "target": { "kind": "ring" }, "n_pairs": 16 });
    refuses(&app, "/api/coupling", &coupling, "/n_pairs", json!(1), "n_pairs").await;
    refuses(
        &app,
        "/api/coupling",
        &coupling,
        "/n_pairs",
        json!(100_000),
        "n_pairs",
    )
    .await;
    refuses(
        &app,
        "/api/coupling",
        &coupling,
        "/target/kind",
        json!("../../etc/passwd"),
        "target.kind",
    )
    .await;

    let view = json!({ "run": "some-run", "n_particles": 10, "grid": 4, "frames": 3 });
    refuses(&app, "/api/run_view", &view, "/run", json!("../secret"), "run").await;
    refuses(&app, "/api/run_view", &view, "/run", json!("/etc"), "run").await;
    refuses(&app, "/api/run_view", &view, "/run", json!(".hidden"), "run").await;
    refuses(&app, "/api/run_view", &view, "/run", json!("no-such-run"), "run").await;

    let train = train_request("client-bad-input", 10);
    refuses(&app, "/api/train", &train, "/client", json!("x"), "client").await;
    refuses(
        &app,
        "/api/train",
        &train,
        "/client",
        json!("a/b/c/d/e/f"),
        "client",
    )
    .await;
    refuses(
        &app,
        "/api/train",
        &train,
        "/coupling",
        json!("greedy"),
        "coupling",
    )
    .await;
    refuses(&app, "/api/train", &train, "/steps", json!(-100), "steps").await;
    refuses(
        &app,
        "/api/train",
        &train,
        "/steps",
        json!(1_000_000_000_000i64),
        "steps",
    )
    .await;
    refuses(&app, "/api/train", &train, "/width", json!(100_000), "width").await;
    refuses(
        &app,
        "/api/train",
        &train,
        "/learning_rate",
        json!(5.0),
        "learning_rate",
    )
    .await;
    refuses(
        &app,
        "/api/train/stop",
        &json!({ "client": "nobody-trains" }),
        "/client",
        json!("nobody-trains"),
        "client",
    )
    .await;

    // Malformed JSON, an unknown key, a wrong content type and an oversize body: 4xx, JSON, a message.
    let (status, answer) = post(&app, "/api/flow", "{\"target\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["error"].is_string());
    let mut unknown = flow.clone();
    unknown["colour"] = json!("red");
    let (status, answer) = post_json(&app, "/api/flow", &unknown).await;
    assert!(
        status.is_client_error() && answer["error"].as_str().unwrap().contains("colour"),
        "{answer}"
    );
    let oversize = format!(
        "{{\"target\": {{\"kind\": \"drawn\", \"points\": [{}]}}}}",
        vec!["[0.0, 0.0]"; MAX_BODY_BYTES / 8].join(",")
    );
    let (status, answer) = post(&app, "/api/flow", oversize).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    let too_many = json!({
        "target": { "kind": "drawn", "points": vec![[0.0, 0.0]; 2_001] },
        "path": { "kind": "affine" }, "n_particles": 5, "grid": 4, "density_grid": 4, "frames": 3
    });
    let (status, answer) = post_json(&app, "/api/flow", &too_many).await;
    assert!(
        status.is_client_error() && answer["field"] == "target.points",
        "{answer}"
    );
    let response = app
        .clone()
        .oneshot(
            Request::post("/api/flow")
                .body(Body::from(flow.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let response = app
        .clone()
        .oneshot(Request::get("/no/such/page").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Still serving: the page, its assets and a good request.
    for page in ["/", "/app.js", "/style.css", "/api/options"] {
        let response = app
            .clone()
            .oneshot(Request::get(page).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{page}");
    }
    let (status, frames) = post_json(&app, "/api/flow", &flow).await;
    assert_eq!(status, StatusCode::OK, "{frames}");
    assert_eq!(frames["particles"].as_array().unwrap().len(), 5);
    assert_eq!(frames["particles"][0].as_array().unwrap().len(), 100);
    assert_eq!(frames["field"][4].as_array().unwrap().len(), 8 * 8 * 2);
}

#[tokio::test]
async fn the_lagrangian_log_density_agrees_with_the_closed_form() {
    let runs = tempdir("lagrangian");
    let app = app(&runs);
    for (target, path) in [
        (
            "mixtures",
            json!({ "kind": "affine", "scheduler": "cond_ot", "sigma": 0.0 }),
        ),
        (
            "8gaussians",
            json!({ "kind": "affine", "scheduler": "cosine", "sigma": 0.0 }),
        ),
        ("gaussian", json!({ "kind": "schrodinger_bridge", "sigma": 0.5 })),
    ] {
        let request =
            json!({ "target": { "kind": target }, "path": path, "start": [0.7, -0.4], "steps": 400 });
        let (status, answer) = post_json(&app, "/api/trajectory", &request).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let integrated = answer["log_density"].as_array().unwrap();
        let exact = answer["log_density_exact"].as_array().unwrap();
        assert_eq!(integrated.len(), exact.len());
        let max_error = integrated
            .iter()
            .zip(exact)
            .map(|(a, b)| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs())
            .fold(0.0, f64::max);
        // RK4 with 400 steps and central-difference divergences: far below 1e-4 on these targets.
        assert!(
            max_error < 1e-4,
            "{target}: max |integrated - closed form| = {max_error}"
        );
        assert!((answer["max_error"].as_f64().unwrap() - max_error).abs() < 1e-12);
        // The density changes along the path: the check is not of a constant.
        let first = exact[0].as_f64().unwrap();
        let spread = exact
            .iter()
            .map(|v| (v.as_f64().unwrap() - first).abs())
            .fold(0.0, f64::max);
        assert!(
            spread > 0.1,
            "{target}: ln rho stays within {spread} of its start"
        );
    }
}

#[tokio::test]
async fn exact_ot_pairs_never_cross_and_cost_less_than_independent_pairs() {
    let runs = tempdir("coupling");
    let app = app(&runs);
    for (target, seed) in [("8gaussians", 1), ("ring", 2), ("moons", 3)] {
        let request = json!({ "target": { "kind": target }, "n_pairs": 128, "seed": seed });
        let (status, answer) = post_json(&app, "/api/coupling", &request).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        // Optimal pairs for the squared distance never meet at the same time, but their segments may still
        // cross at different times; they cross far less often than independent pairs.
        let crossings_ot = answer["crossings_ot"].as_u64().unwrap();
        let crossings_independent = answer["crossings_independent"].as_u64().unwrap();
        assert!(
            5 * crossings_ot < crossings_independent,
            "{target}: {crossings_ot} vs {crossings_independent}"
        );
        assert!(answer["cost_ot"].as_f64().unwrap() < answer["cost_independent"].as_f64().unwrap());
        let mut permutation: Vec<u64> = answer["ot"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        permutation.sort_unstable();
        assert_eq!(permutation, (0..128).collect::<Vec<u64>>());
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroflow-explorer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Opens a raw HTTP/1.1 connection that posts `body` to `path` and returns it with what was read up to
/// `until` (or panics after 60 s).
async fn open_stream(
    addr: std::net::SocketAddr,
    path: &str,
    body: &Value,
    until: &str,
) -> (tokio::net::TcpStream, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buffer = [0u8; 4096];
    while !seen.contains(until) {
        assert!(
            Instant::now() < deadline,
            "no `{until}` within 60 s; read: {seen}"
        );
        let read = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buffer))
            .await
            .expect("the stream stalled")
            .unwrap();
        assert!(
            read > 0,
            "the server closed the stream before `{until}`; read: {seen}"
        );
        seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
    (stream, seen)
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_training_per_client_stop_ends_it_and_a_closed_page_stops_it() {
    let runs = tempdir("training");
    let (app, state) = router(ServerConfig {
        runs_dir: runs.clone(),
        initial_run: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // A long training streams progress; a second one for the same client is refused while it runs.
    let (stream, seen) = open_stream(
        addr,
        "/api/train",
        &long_train_request("client-one"),
        "event: progress",
    )
    .await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    let (_second, refused) = open_stream(
        addr,
        "/api/train",
        &train_request("client-one", 10),
        "already training",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 409"), "{refused}");
    assert!(refused.contains("\"field\":\"client\""), "{refused}");
    assert_eq!(state.training_clients(), vec!["client-one".to_owned()]);

    // The page goes away: the stream is dropped, the training stops at its next step and leaves a
    // resumable run (checkpoint and config) behind.
    drop(stream);
    wait_until("the training of a closed page to stop", || {
        state.training_clients().is_empty()
    })
    .await;
    let run_dirs: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(run_dirs.len(), 1, "{run_dirs:?}");
    assert!(run_dirs[0].join("checkpoint.safetensors").is_file());
    assert!(run_dirs[0].join("config.toml").is_file());
    assert!(
        !run_dirs[0].join("model.safetensors").exists(),
        "a stopped run is not finished"
    );

    // Stop: the stream ends with a `finished` event that says it did not complete.
    let (mut stream, _) = open_stream(
        addr,
        "/api/train",
        &long_train_request("client-two"),
        "event: progress",
    )
    .await;
    let (mut stop, answer) = open_stream(
        addr,
        "/api/train/stop",
        &json!({ "client": "client-two" }),
        "\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let _ = stop.shutdown().await;
    let mut tail = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut buffer = [0u8; 4096];
        while !tail.contains("event: finished") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the stream ended without `finished`: {tail}");
            tail.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    })
    .await
    .expect("no `finished` event within 60 s of Stop");
    assert!(tail.contains("\"completed\":false"), "{tail}");
    wait_until("the stopped training to leave", || {
        state.training_clients().is_empty()
    })
    .await;

    // A short training runs to the end and leaves a finished run the page can open.
    let (_stream, seen) = open_stream(
        addr,
        "/api/train",
        &train_request("client-three", 30),
        "event: finished",
    )
    .await;
    assert!(seen.contains("\"completed\":true"), "{seen}");
    let run = seen
        .split("\"run\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let listed = ferroflow_explorer::runs::list_runs(&runs);
    assert_eq!(listed, vec![run.clone()]);
    let in_process = self::app(&runs);
    let (status, frames) = post_json(
        &in_process,
        "/api/run_view",
        &json!({ "run": run, "n_particles": 20, "grid": 4, "frames": 3 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{frames}");
    assert_eq!(frames["particles"][2].as_array().unwrap().len(), 40);
    assert_eq!(frames["field"][0].as_array().unwrap().len(), 32);
}
