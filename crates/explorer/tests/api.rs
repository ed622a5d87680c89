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

/// A small mode-seeking request on the closed-form field of 8gaussians under the CondOT path.
fn mode_seeking_request(lambda: f64, estimator: &str) -> Value {
    json!({
        "target": { "kind": "8gaussians" },
        "path": { "kind": "affine", "scheduler": "cond_ot", "sigma": 0.0 },
        "lambda": lambda, "estimator": estimator, "probes": 2, "distribution": "rademacher",
        "schedule": "constant", "t_start": 0.0, "t_end": 1.0, "power": 1.0, "sampler": "euler", "steps": 20,
        "n_particles": 200, "grid": 6, "t": 0.5, "repeats": 16, "seed": 4
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
    let mut sampled = flow.clone();
    sampled["sampler"] = json!("euler");
    refuses(
        &app,
        "/api/flow",
        &sampled,
        "/sampler",
        json!("leapfrog"),
        "sampler",
    )
    .await;
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
    let mut sampled = view.clone();
    sampled["sampler"] = json!("euler");
    refuses(
        &app,
        "/api/run_view",
        &sampled,
        "/sampler",
        json!("rk45"),
        "sampler",
    )
    .await;

    let train = train_request("client-bad-input", 10);
    let mut sourced = train.clone();
    sourced["source"] = json!({ "kind": "moons" });
    refuses(
        &app,
        "/api/train",
        &sourced,
        "/source/kind",
        json!("spiral"),
        "source.kind",
    )
    .await;
    refuses(
        &app,
        "/api/train",
        &sourced,
        "/source/kind",
        json!("drawn"),
        "source.kind",
    )
    .await;
    sourced["path"] = json!({ "kind": "one_sided", "sigma": 0.01 });
    refuses(
        &app,
        "/api/train",
        &sourced,
        "/source/kind",
        json!("8gaussians"),
        "source.kind",
    )
    .await;
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

    // The mode-seeking panel, on a closed-form field: every field named when refused.
    let guide = mode_seeking_request(0.5, "exact");
    for (pointer, value, field) in [
        ("/lambda", json!(-0.1), "lambda"),
        ("/lambda", json!(1e6), "lambda"),
        ("/estimator", json!("sloppy"), "estimator"),
        ("/probes", json!(0), "probes"),
        ("/probes", json!(100_000), "probes"),
        ("/distribution", json!("uniform"), "distribution"),
        ("/schedule", json!("sawtooth"), "schedule"),
        ("/sampler", json!("rk45"), "sampler"),
        ("/steps", json!(0), "steps"),
        ("/n_particles", json!(10_000_000), "n_particles"),
        ("/grid", json!(1), "grid"),
        ("/t", json!(1.5), "t"),
        ("/repeats", json!(1), "repeats"),
        ("/target/kind", json!("spiral"), "target.kind"),
        ("/path/sigma", json!(9.0), "path.sigma"),
    ] {
        refuses(&app, "/api/mode_seeking", &guide, pointer, value, field).await;
    }
    let mut window = guide.clone();
    window["schedule"] = json!("window");
    refuses(
        &app,
        "/api/mode_seeking",
        &window,
        "/t_start",
        json!(-1.0),
        "t_start",
    )
    .await;
    window["t_start"] = json!(0.8);
    refuses(
        &app,
        "/api/mode_seeking",
        &window,
        "/t_end",
        json!(0.2),
        "t_start",
    )
    .await;
    let mut decay = guide.clone();
    decay["schedule"] = json!("decay");
    refuses(&app, "/api/mode_seeking", &decay, "/power", json!(-2.0), "power").await;
    let mut clipped = guide.clone();
    clipped["clip"] = json!(0.0);
    refuses(&app, "/api/mode_seeking", &clipped, "/clip", json!(-1.0), "clip").await;
    let mut both = guide.clone();
    both["run"] = json!("some-run");
    let (status, answer) = post_json(&app, "/api/mode_seeking", &both).await;
    assert!(status.is_client_error() && answer["field"] == "run", "{answer}");
    let mut neither = guide.clone();
    neither.as_object_mut().unwrap().remove("target");
    let (status, answer) = post_json(&app, "/api/mode_seeking", &neither).await;
    assert!(
        status.is_client_error() && answer["field"] == "target",
        "{answer}"
    );
    let mut no_path = guide.clone();
    no_path.as_object_mut().unwrap().remove("path");
    let (status, answer) = post_json(&app, "/api/mode_seeking", &no_path).await;
    assert!(status.is_client_error() && answer["field"] == "path", "{answer}");
    // Runs by name only: a path or a missing run is refused on every run endpoint.
    let mut by_run = guide.clone();
    let object = by_run.as_object_mut().unwrap();
    object.remove("target");
    object.remove("path");
    by_run["run"] = json!("../etc");
    refuses(&app, "/api/mode_seeking", &by_run, "/run", json!("../etc"), "run").await;
    refuses(
        &app,
        "/api/mode_seeking",
        &by_run,
        "/run",
        json!("no-such-run"),
        "run",
    )
    .await;
    let density = json!({ "run": "no-such-run", "grid": 8, "steps": 10 });
    refuses(
        &app,
        "/api/run_density",
        &density,
        "/run",
        json!("/etc/passwd"),
        "run",
    )
    .await;
    refuses(
        &app,
        "/api/run_density",
        &density,
        "/run",
        json!("no-such-run"),
        "run",
    )
    .await;
    refuses(&app, "/api/run_density", &density, "/grid", json!(1000), "grid").await;
    refuses(&app, "/api/run_density", &density, "/steps", json!(1), "steps").await;
    let trajectory = json!({ "run": "no-such-run", "start": [0.0, 0.0], "steps": 10 });
    refuses(
        &app,
        "/api/run_trajectory",
        &trajectory,
        "/run",
        json!(".hidden"),
        "run",
    )
    .await;
    refuses(
        &app,
        "/api/run_trajectory",
        &trajectory,
        "/start/0",
        json!(99.0),
        "start[0]",
    )
    .await;
    refuses(
        &app,
        "/api/run_trajectory",
        &trajectory,
        "/steps",
        json!(2),
        "steps",
    )
    .await;
    let coupling = json!({ "target": { "kind": "8gaussians" }, "n_pairs": 16, "epsilon": 0.1 });
    refuses(
        &app,
        "/api/coupling",
        &coupling,
        "/epsilon",
        json!(0.0),
        "epsilon",
    )
    .await;
    refuses(
        &app,
        "/api/coupling",
        &coupling,
        "/epsilon",
        json!(1e9),
        "epsilon",
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

    // A Sinkhorn coupling at the smallest epsilon on batches of 32 stops at its iteration cap: the stream
    // says so in a `note` event before training, naming the key to raise; at a large epsilon it converges
    // and nothing is said.
    let mut sinkhorn = train_request("client-four", 5);
    sinkhorn["coupling"] = json!("sinkhorn");
    sinkhorn["epsilon"] = json!(0.001);
    let (_stream, seen) = open_stream(addr, "/api/train", &sinkhorn, "event: finished").await;
    assert!(seen.contains("\"completed\":true"), "{seen}");
    assert!(
        seen.contains("event: note") && seen.contains("flow.coupling.sinkhorn.max_iterations"),
        "{seen}"
    );
    sinkhorn["client"] = json!("client-five");
    sinkhorn["epsilon"] = json!(1.0);
    let (_stream, seen) = open_stream(addr, "/api/train", &sinkhorn, "event: finished").await;
    assert!(
        seen.contains("\"completed\":true") && !seen.contains("event: note"),
        "{seen}"
    );
}

fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// Mode seeking on the closed-form field of 8gaussians (CondOT): lambda = 0 gives the plain samples bit for
/// bit with either estimator; the exact divergence and its gradient match finite differences of the paths
/// crate's closed-form velocity; Hutchinson's mean over many probes approaches the exact divergence, with the
/// spread its closed form predicts; guidance raises the samples' log-density.
#[tokio::test]
async fn mode_seeking_on_a_closed_form_field_matches_its_closed_forms() {
    use ferroflow_explorer::views::{Marginal, PathSpec, TargetSpec};
    let runs = tempdir("mode-seeking");
    let app = app(&runs);
    for estimator in ["exact", "hutchinson"] {
        let (status, answer) =
            post_json(&app, "/api/mode_seeking", &mode_seeking_request(0.0, estimator)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["identical"], json!(true), "{estimator}");
        assert_eq!(answer["plain"], answer["guided"], "{estimator}");
        assert_eq!(answer["guided_evals"], json!(0), "{estimator}");
    }

    let mut request = mode_seeking_request(1.0, "exact");
    request["repeats"] = json!(256);
    request["probes"] = json!(4);
    let (status, answer) = post_json(&app, "/api/mode_seeking", &request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["identical"], json!(false));
    assert_eq!(answer["guided_evals"], json!(20));
    let target = TargetSpec {
        kind: "8gaussians".into(),
        points: vec![],
    };
    let path = PathSpec {
        kind: "affine".into(),
        scheduler: "cond_ot".into(),
        sigma: 0.0,
    };
    let marginal = Marginal::new(&target, &path, 4).unwrap();
    let t = answer["t"].as_f64().unwrap();
    let cells = ferroflow_explorer::views::grid_points(6);
    let divergence = floats(&answer["divergence"]);
    let gradient = floats(&answer["gradient"]);
    const STEP: f64 = 1e-3;
    for (cell, &x) in cells.iter().enumerate() {
        let reference = marginal.divergence(x, t);
        assert!(
            (divergence[cell] - reference).abs() < 1e-5 * (1.0 + reference.abs()),
            "cell {cell} at {x:?}: autograd div v {} vs finite differences {reference}",
            divergence[cell]
        );
        for axis in 0..2 {
            let (mut plus, mut minus) = (x, x);
            plus[axis] += STEP;
            minus[axis] -= STEP;
            let reference = -(marginal.divergence(plus, t) - marginal.divergence(minus, t)) / (2.0 * STEP);
            let value = gradient[2 * cell + axis];
            assert!(
                (value - reference).abs() < 1e-3 * (1.0 + reference.abs()),
                "cell {cell} axis {axis}: autograd g {value} vs finite differences {reference}"
            );
        }
    }

    // 256 repeats of a 4-probe estimate: the mean is within 5 standard errors of the exact divergence at
    // every cell, and the measured spread is the closed form's within sampling error.
    let means = floats(&answer["hutchinson_mean"]);
    let stds = floats(&answer["hutchinson_std"]);
    let theory = floats(&answer["hutchinson_std_theory"]);
    for cell in 0..cells.len() {
        let standard_error = theory[cell] / 256f64.sqrt();
        assert!(
            (means[cell] - divergence[cell]).abs() <= 5.0 * standard_error + 1e-9,
            "cell {cell}: Hutchinson mean {} vs exact {} (standard error {standard_error})",
            means[cell],
            divergence[cell]
        );
    }
    let spread = &answer["spread"];
    let ratio = spread["mean_std"].as_f64().unwrap() / spread["mean_std_theory"].as_f64().unwrap();
    assert!(
        (0.9..1.1).contains(&ratio),
        "measured / closed-form spread {ratio}: {spread}"
    );
    assert!(stds.iter().any(|&s| s > 0.0), "the estimate never varied");
    let timing = &answer["timing"];
    for key in [
        "plain_eval_ms",
        "exact_eval_ms",
        "hutchinson_eval_ms",
        "guided_solve_ms",
    ] {
        assert!(timing[key].as_f64().unwrap() > 0.0, "{key}: {timing}");
    }

    // Guidance moves samples towards the modes: their mean closed-form log-density at the end rises.
    let mean_log_density = |samples: &[f64]| {
        samples
            .chunks(2)
            .map(|p| marginal.log_density([p[0], p[1]], 0.999))
            .sum::<f64>()
            / (samples.len() / 2) as f64
    };
    let plain = mean_log_density(&floats(&answer["plain"]));
    let guided = mean_log_density(&floats(&answer["guided"]));
    eprintln!("mean ln rho_1: plain {plain:.3}, guided (lambda 1) {guided:.3}; timing {timing}");
    assert!(guided > plain + 0.05, "plain {plain}, guided {guided}");

    // Gaussian probes: a different closed-form spread, still matched.
    request["distribution"] = json!("gaussian");
    let (status, answer) = post_json(&app, "/api/mode_seeking", &request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let spread = &answer["spread"];
    let ratio = spread["mean_std"].as_f64().unwrap() / spread["mean_std_theory"].as_f64().unwrap();
    assert!(
        (0.9..1.1).contains(&ratio),
        "gaussian probes: measured / closed-form spread {ratio}: {spread}"
    );
}

/// Sinkhorn pairs in the couplings view: with a small epsilon they cost and cross like exact OT's, far less
/// than independent pairs; with a large one the plan is nearly the product of the marginals.
#[tokio::test]
async fn sinkhorn_pairs_move_from_ot_to_independent_as_epsilon_grows() {
    let runs = tempdir("sinkhorn");
    let app = app(&runs);
    let request = |epsilon: f64| json!({ "target": { "kind": "8gaussians" }, "n_pairs": 128, "seed": 7, "epsilon": epsilon });
    let (status, sharp) = post_json(&app, "/api/coupling", &request(0.01)).await;
    assert_eq!(status, StatusCode::OK, "{sharp}");
    let (status, blurred) = post_json(&app, "/api/coupling", &request(10.0)).await;
    assert_eq!(status, StatusCode::OK, "{blurred}");
    let cost = |answer: &Value, key: &str| answer[key].as_f64().unwrap();
    let crossings = |answer: &Value, key: &str| answer[key].as_u64().unwrap();
    eprintln!(
        "costs: ot {:.3}, sinkhorn(0.01) {:.3}, sinkhorn(10) {:.3}, independent {:.3}; crossings: ot {}, sinkhorn(0.01) {}, sinkhorn(10) {}, independent {}",
        cost(&sharp, "cost_ot"),
        cost(&sharp, "cost_sinkhorn"),
        cost(&blurred, "cost_sinkhorn"),
        cost(&sharp, "cost_independent"),
        crossings(&sharp, "crossings_ot"),
        crossings(&sharp, "crossings_sinkhorn"),
        crossings(&blurred, "crossings_sinkhorn"),
        crossings(&sharp, "crossings_independent"),
    );
    assert!(cost(&sharp, "cost_sinkhorn") < 1.5 * cost(&sharp, "cost_ot"));
    assert!(3 * crossings(&sharp, "crossings_sinkhorn") < crossings(&sharp, "crossings_independent"));
    assert!(cost(&blurred, "cost_sinkhorn") > 0.9 * cost(&sharp, "cost_independent"));
    assert!(crossings(&blurred, "crossings_sinkhorn") > 3 * crossings(&sharp, "crossings_sinkhorn"));
    assert!(cost(&blurred, "cost_sinkhorn") > 1.4 * cost(&sharp, "cost_sinkhorn"));
    assert_eq!(sharp["sinkhorn_source"].as_array().unwrap().len(), 128);
}

/// A tiny trained run (200 steps on 8gaussians), trained by the engine into `runs`.
fn tiny_run(runs: &Path) -> String {
    let text = format!(
        "[run]\nname = \"tiny\"\nout_dir = {:?}\n[data]\ntarget = {{ kind = \"8gaussians\" }}\n\
         [model]\nwidth = 32\ndepth = 2\n[train]\nsteps = 200\nbatch_size = 128\n\
         [sample]\nn_samples = 64\nw2_samples = 32\nsteps = 10\n",
        runs.display().to_string()
    );
    let config = ferroflow_engine::RunConfig::parse(&text, Path::new("tiny.toml")).unwrap();
    ferroflow_engine::run::train_new(&config, &mut [], None).unwrap();
    "tiny".into()
}

/// A trained run's learned density: its mass over the window is 1 within the grid's and the solver's
/// errors; the log-density integrated forward along a trajectory meets the engine's backward likelihood at
/// its end; mode seeking of the run is plain at lambda = 0 and moves samples otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_runs_density_integrates_to_one_and_its_trajectory_meets_the_likelihood() {
    let runs = tempdir("run-density");
    let run = tokio::task::spawn_blocking({
        let runs = runs.clone();
        move || tiny_run(&runs)
    })
    .await
    .unwrap();
    let app = app(&runs);
    let (status, density) = post_json(
        &app,
        "/api/run_density",
        &json!({ "run": run, "grid": 48, "steps": 40 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{density}");
    let mass = density["mass"].as_f64().unwrap();
    eprintln!(
        "learned mass over [-7, 7]^2 on a 48x48 grid: {mass:.4} ({} ms)",
        density["compute_ms"]
    );
    // An under-trained model (200 steps) is wider than its target: some of its mass lies outside the window.
    assert!((0.85..1.05).contains(&mass), "mass {mass}");
    assert_eq!(density["log_density"].as_array().unwrap().len(), 48 * 48);

    // The learned density over time: the source's at t = 0, the engine's likelihood at t = 1, and mass
    // about 1 in between.
    let (status, frames) = post_json(
        &app,
        "/api/run_density_frames",
        &json!({ "run": run, "grid": 48, "frames": 3, "steps": 40 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{frames}");
    let masses = floats(&frames["mass"]);
    eprintln!(
        "learned density frames: mass {masses:.4?} at t = 0, 0.5, 1 ({} ms)",
        frames["compute_ms"]
    );
    let at_zero = floats(&frames["log_density"][0]);
    let cells = ferroflow_explorer::views::grid_points(48);
    for (value, point) in at_zero.iter().zip(&cells) {
        let exact = -std::f64::consts::TAU.ln() - 0.5 * (point[0] * point[0] + point[1] * point[1]);
        assert!(
            (value - exact).abs() < 1e-5 * exact.abs().max(1.0),
            "{value} vs {exact}"
        );
    }
    let at_one = floats(&frames["log_density"][2]);
    let engine = floats(&density["log_density"]);
    let worst = at_one
        .iter()
        .zip(&engine)
        .filter(|(_, e)| **e > -30.0)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0, f64::max);
    eprintln!("ln rho_1 by the frames vs the engine's likelihood: max gap {worst:.2e} where ln p > -30");
    assert!(worst < 1e-4, "{worst}");
    assert!((0.9..1.05).contains(&masses[1]), "{masses:?}");
    assert!((masses[2] - mass).abs() < 1e-2, "{masses:?} vs {mass}");

    let (status, trajectory) = post_json(
        &app,
        "/api/run_trajectory",
        &json!({ "run": run, "start": [0.5, -0.8], "steps": 100 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{trajectory}");
    let log_density = floats(&trajectory["log_density"]);
    let forward = *log_density.last().unwrap();
    let backward = trajectory["log_density_backward"].as_f64().unwrap();
    eprintln!("ln p at the end: forward {forward:.5}, engine backward {backward:.5}");
    assert!(
        (forward - backward).abs() < 1e-2,
        "forward {forward}, backward {backward}"
    );
    let start = -std::f64::consts::TAU.ln() - 0.5 * (0.5f64 * 0.5 + 0.8 * 0.8);
    assert!((log_density[0] - start).abs() < 1e-6);
    assert_eq!(trajectory["points"].as_array().unwrap().len(), 2 * 101);

    let mut guide = mode_seeking_request(0.0, "hutchinson");
    let object = guide.as_object_mut().unwrap();
    object.remove("target");
    object.remove("path");
    guide["run"] = json!(run);
    let (status, plain) = post_json(&app, "/api/mode_seeking", &guide).await;
    assert_eq!(status, StatusCode::OK, "{plain}");
    assert_eq!(plain["identical"], json!(true));
    guide["lambda"] = json!(0.5);
    let (status, guided) = post_json(&app, "/api/mode_seeking", &guide).await;
    assert_eq!(status, StatusCode::OK, "{guided}");
    assert_eq!(guided["identical"], json!(false));
    assert_eq!(plain["plain"], guided["plain"]);
}

/// The closed-form views, computed in batched tensor operations, agree with the paths crate's per-point
/// closed forms: the marginal velocity on the arrow grid, ln rho_t on the heat-map grid and div v at the
/// particles, at every frame (up to the 1e-4 rounding of the JSON and f32).
#[tokio::test]
async fn the_batched_views_agree_with_the_paths_crates_closed_forms() {
    use ferroflow_explorer::views::{Marginal, PathSpec, TargetSpec, grid_points};
    let runs = tempdir("batched");
    let app = app(&runs);
    for (kind, scheduler) in [("mixtures", "cosine"), ("8gaussians", "cond_ot")] {
        let request = json!({
            "target": { "kind": kind },
            "path": { "kind": "affine", "scheduler": scheduler, "sigma": 0.0 },
            "n_particles": 40, "grid": 6, "density_grid": 5, "frames": 6, "seed": 2
        });
        let (status, frames) = post_json(&app, "/api/flow", &request).await;
        assert_eq!(status, StatusCode::OK, "{frames}");
        let target = TargetSpec {
            kind: kind.into(),
            points: vec![],
        };
        let path = PathSpec {
            kind: "affine".into(),
            scheduler: scheduler.into(),
            sigma: 0.0,
        };
        let marginal = Marginal::new(&target, &path, 2).unwrap();
        let times = floats(&frames["t"]);
        let (mut worst_field, mut worst_density, mut worst_divergence) = (0.0f64, 0.0f64, 0.0f64);
        for (frame, &t) in times.iter().enumerate() {
            let field = floats(&frames["field"][frame]);
            for (cell, &x) in grid_points(6).iter().enumerate() {
                let v = marginal.velocity(x, t);
                for axis in 0..2 {
                    let error = (field[2 * cell + axis] - v[axis]).abs() / (1.0 + v[axis].abs());
                    worst_field = worst_field.max(error);
                }
            }
            let density = floats(&frames["log_density"][frame]);
            for (cell, &x) in grid_points(5).iter().enumerate() {
                let exact = marginal.log_density(x, t).max(-1e4);
                worst_density = worst_density.max((density[cell] - exact).abs() / (1.0 + exact.abs()));
            }
            let particles = floats(&frames["particles"][frame]);
            let divergence = floats(&frames["divergence"][frame]);
            for (idx, &d) in divergence.iter().enumerate() {
                let exact = marginal.divergence([particles[2 * idx], particles[2 * idx + 1]], t);
                worst_divergence = worst_divergence.max((d - exact).abs() / (1.0 + exact.abs()));
            }
        }
        eprintln!(
            "{kind}: worst relative errors: field {worst_field:.1e}, ln rho {worst_density:.1e}, div v {worst_divergence:.1e}"
        );
        assert!(worst_field < 1e-4, "{kind}: field {worst_field}");
        assert!(worst_density < 1e-4, "{kind}: ln rho {worst_density}");
        // The particles' positions are rounded to 1e-4 in the answer, so their divergence is compared at
        // points up to 5e-5 away.
        assert!(worst_divergence < 1e-2, "{kind}: div v {worst_divergence}");
    }
}

/// The closed-form particles pushed by Euler approach RK4's at first order: ten times the steps, about a tenth
/// of the gap at t = 1; the midpoint method starts far closer.
#[tokio::test]
async fn euler_particles_approach_rk4_at_first_order() {
    let runs = tempdir("samplers");
    let app = app(&runs);
    let end_gap = |frames: i64, sampler: &'static str| {
        let app = app.clone();
        async move {
            let request = |name: &str| {
                json!({
                    "target": { "kind": "mixtures" },
                    "path": { "kind": "affine", "scheduler": "cond_ot", "sigma": 0.0 },
                    "n_particles": 200, "grid": 2, "density_grid": 2, "frames": frames, "seed": 5,
                    "sampler": name
                })
            };
            let (status, reference) = post_json(&app, "/api/flow", &request("rk4")).await;
            assert_eq!(status, StatusCode::OK, "{reference}");
            let (status, other) = post_json(&app, "/api/flow", &request(sampler)).await;
            assert_eq!(status, StatusCode::OK, "{other}");
            let last = (frames - 1) as usize;
            let a = floats(&reference["particles"][last]);
            let b = floats(&other["particles"][last]);
            a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len() as f64
        }
    };
    let (coarse, fine) = (end_gap(5, "euler").await, end_gap(41, "euler").await);
    let midpoint = end_gap(5, "midpoint").await;
    eprintln!(
        "mean |euler - rk4| at t = 1: 8 steps {coarse:.4}, 80 steps {fine:.4}; midpoint, 8 steps {midpoint:.4}"
    );
    assert!(coarse > 1e-3, "Euler with 8 steps matches RK4: {coarse}");
    assert!(
        (5.0..20.0).contains(&(coarse / fine)),
        "8 steps {coarse}, 80 steps {fine}"
    );
    assert!(midpoint < 0.5 * coarse, "midpoint {midpoint}, Euler {coarse}");
}

/// A drawn target of 2,000 points (2,000 mixture components): Hutchinson's repeats are estimated in batches
/// and still centre on the exact divergence, and a grid whose whole batch would be too large is refused,
/// naming `grid`.
#[tokio::test]
async fn mode_seeking_on_a_large_drawn_target_is_batched_or_refused() {
    let runs = tempdir("drawn-mode-seeking");
    let app = app(&runs);
    let points: Vec<[f64; 2]> = (0..2_000)
        .map(|k| {
            let angle = k as f64 * 0.0031;
            [3.0 * angle.cos(), 3.0 * angle.sin()]
        })
        .collect();
    let mut request = mode_seeking_request(0.3, "exact");
    request["target"] = json!({ "kind": "drawn", "points": points });
    request["n_particles"] = json!(50);
    request["steps"] = json!(2);
    request["grid"] = json!(6);
    request["repeats"] = json!(64);
    request["probes"] = json!(4);
    let (status, answer) = post_json(&app, "/api/mode_seeking", &request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (means, exact, theory) = (
        floats(&answer["hutchinson_mean"]),
        floats(&answer["divergence"]),
        floats(&answer["hutchinson_std_theory"]),
    );
    for cell in 0..36 {
        let standard_error = theory[cell] / 8.0;
        assert!(
            (means[cell] - exact[cell]).abs() <= 5.0 * standard_error + 1e-9 * (1.0 + exact[cell].abs()),
            "cell {cell}: mean {} exact {} standard error {standard_error}",
            means[cell],
            exact[cell]
        );
    }
    request["grid"] = json!(48);
    let (status, answer) = post_json(&app, "/api/mode_seeking", &request).await;
    assert!(status.is_client_error() && answer["field"] == "grid", "{answer}");
}

/// The mean over particles of the distance to the nearest of 8gaussians' modes, and the share within 1.
fn near_8gaussians_modes(points: &[f64]) -> (f64, f64) {
    let mut total = 0.0;
    let mut near = 0;
    for point in points.chunks(2) {
        let nearest = (0..8)
            .map(|k| {
                let angle = k as f64 * std::f64::consts::FRAC_PI_4;
                (point[0] - 5.0 * angle.cos()).hypot(point[1] - 5.0 * angle.sin())
            })
            .fold(f64::INFINITY, f64::min);
        total += nearest;
        near += usize::from(nearest < 1.0);
    }
    let n = (points.len() / 2) as f64;
    (total / n, near as f64 / n)
}

/// DDPM's ancestral sampler on closed-form fields: it starts from the same source points as the ODE, ends
/// on the target (8gaussians' modes; the mixtures preset's mean), differs from the ODE's particles on the
/// way (it is stochastic) and runs on the variance-preserving path too. The pushed-forward grid starts as the
/// source grid and its points follow the same flow as a trajectory computed point by point.
#[tokio::test]
async fn ddpm_reaches_the_target_and_the_pushed_grid_follows_the_flow() {
    let runs = tempdir("ddpm");
    let app = app(&runs);
    let request = |target: &str, path: Value, sampler: &str| {
        json!({
            "target": { "kind": target }, "path": path,
            "n_particles": 2000, "grid": 2, "density_grid": 2, "frames": 51, "seed": 7,
            "sampler": sampler, "grid_lines": 5
        })
    };
    let cond_ot = json!({ "kind": "affine", "scheduler": "cond_ot", "sigma": 0.0 });
    let (status, ode) = post_json(&app, "/api/flow", &request("8gaussians", cond_ot.clone(), "rk4")).await;
    assert_eq!(status, StatusCode::OK, "{ode}");
    let (status, ddpm) = post_json(&app, "/api/flow", &request("8gaussians", cond_ot.clone(), "ddpm")).await;
    assert_eq!(status, StatusCode::OK, "{ddpm}");
    assert_eq!(ode["particles"][0], ddpm["particles"][0]);
    let (ode_end, ddpm_end) = (floats(&ode["particles"][50]), floats(&ddpm["particles"][50]));
    let (ode_distance, ode_near) = near_8gaussians_modes(&ode_end);
    let (ddpm_distance, ddpm_near) = near_8gaussians_modes(&ddpm_end);
    let halfway: f64 = floats(&ode["particles"][25])
        .iter()
        .zip(floats(&ddpm["particles"][25]))
        .map(|(a, b)| (a - b).abs())
        .sum::<f64>()
        / 4000.0;
    eprintln!(
        "8gaussians at t = 1: ODE {ode_distance:.3} from a mode ({ode_near:.3} within 1), DDPM \
         {ddpm_distance:.3} ({ddpm_near:.3}); mean |ODE - DDPM| at t = 0.5: {halfway:.3}"
    );
    // A mode's spread is s = 0.1^0.25 = 0.562 per axis, so the distance to it is Rayleigh: mean
    // s sqrt(pi / 2) = 0.705, and P(distance < 1) = 1 - exp(-1 / (2 s^2)) = 0.794.
    for (distance, near) in [(ode_distance, ode_near), (ddpm_distance, ddpm_near)] {
        assert!((distance - 0.705).abs() < 0.06, "mean distance {distance}");
        assert!((near - 0.794).abs() < 0.05, "share within 1: {near}");
    }
    assert!(halfway > 0.1, "the ancestral sampler follows the ODE: {halfway}");

    // The mixtures preset's mean is (-0.6, -0.6); 2,000 samples of it have a standard error below 0.07.
    let vp = json!({ "kind": "variance_preserving", "sigma": 0.0 });
    for (path, name) in [(cond_ot.clone(), "cond_ot"), (vp, "variance_preserving")] {
        let (status, out) = post_json(&app, "/api/flow", &request("mixtures", path, "ddpm")).await;
        assert_eq!(status, StatusCode::OK, "{out}");
        let end = floats(&out["particles"][50]);
        let mean = |axis: usize| end.iter().skip(axis).step_by(2).sum::<f64>() / 2000.0;
        eprintln!(
            "mixtures by DDPM on {name}: mean ({:.3}, {:.3})",
            mean(0),
            mean(1)
        );
        assert!((mean(0) + 0.6).abs() < 0.3 && (mean(1) + 0.6).abs() < 0.3);
    }

    // The pushed grid: 5 + 5 lines of 61 points over [-3, 3]^2, pushed by RK4 even when the particles follow
    // DDPM; a grid point's end matches the point-by-point RK4 trajectory from it.
    assert_eq!(ddpm["grid_lines"], json!(5));
    let lines = ddpm["pushed_grid"].as_array().unwrap();
    assert_eq!(lines.len(), 51);
    let first = floats(&lines[0]);
    assert_eq!(first.len(), 2 * 5 * 61 * 2);
    assert_eq!((first[0], first[1]), (-3.0, -3.0));
    assert_eq!((first[2 * 60], first[2 * 60 + 1]), (3.0, -3.0));
    assert_eq!(ddpm["pushed_grid"], ode["pushed_grid"]);
    let last = floats(&lines[50]);
    for point in [17usize, 2 * 61 + 30, 5 * 61 + 44] {
        let start = [first[2 * point], first[2 * point + 1]];
        let (status, trajectory) = post_json(
            &app,
            "/api/trajectory",
            &json!({ "target": { "kind": "8gaussians" }, "path": cond_ot, "start": start, "steps": 400 }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{trajectory}");
        let points = floats(&trajectory["points"]);
        let end = &points[points.len() - 2..];
        let gap = (end[0] - last[2 * point]).hypot(end[1] - last[2 * point + 1]);
        assert!(
            gap < 0.05,
            "grid point {point} from {start:?}: {end:?} vs the grid's end, gap {gap}"
        );
    }

    // Refusals: a grid too dense or negative, an unknown sampler.
    let base = request("8gaussians", cond_ot, "ddpm");
    for (pointer, value) in [
        ("/grid_lines", json!(42)),
        ("/grid_lines", json!(-1)),
        ("/sampler", json!("ancestral")),
    ] {
        let field = if pointer == "/sampler" {
            "sampler"
        } else {
            "grid_lines"
        };
        refuses(&app, "/api/flow", &base, pointer, value, field).await;
    }
}

/// Classifier-free guidance on closed-form fields: `w = 0` is the conditional field bit for bit; the
/// conditional samples lie in their class by the target's own classifier, the unconditional ones in it at
/// the class's weight; a larger weight pushes further in; bad requests are refused naming the field.
#[tokio::test]
async fn classifier_free_guidance_on_a_closed_form_moves_samples_into_the_class() {
    let runs = tempdir("cfg");
    let app = app(&runs);
    let request = |target: &str, class: i64, weight: f64| {
        json!({
            "target": { "kind": target },
            "path": { "kind": "affine", "scheduler": "cond_ot", "sigma": 0.0 },
            "class": class, "weight": weight, "n_samples": 600, "steps": 40, "sampler": "midpoint", "seed": 2
        })
    };
    let (status, plain) = post_json(&app, "/api/classifier_free", &request("8gaussians", 2, 0.0)).await;
    assert_eq!(status, StatusCode::OK, "{plain}");
    assert_eq!(plain["guided"], plain["conditional"]);
    assert_eq!(plain["classes"], json!(8));
    let probability = |view: &Value, k: usize| view["class_probability"][k].as_f64().unwrap();
    let (status, guided) = post_json(&app, "/api/classifier_free", &request("8gaussians", 2, 3.0)).await;
    assert_eq!(status, StatusCode::OK, "{guided}");
    assert_eq!(guided["unconditional"], plain["unconditional"]);
    eprintln!(
        "8gaussians, class 2: p(c | x) unconditional {:.3}, conditional {:.3}, guided w = 3 {:.4}",
        probability(&plain, 0),
        probability(&plain, 1),
        probability(&guided, 2)
    );
    assert!((probability(&plain, 0) - 0.125).abs() < 0.05);
    assert!(probability(&plain, 1) > 0.97);
    assert!(probability(&guided, 2) >= probability(&plain, 1) - 1e-6);
    assert_ne!(guided["guided"], guided["conditional"]);
    // The conditional samples sit around mode 2, at (0, 5).
    let conditional = floats(&plain["conditional"]);
    let mean_y = conditional.iter().skip(1).step_by(2).sum::<f64>() / 600.0;
    assert!((mean_y - 5.0).abs() < 0.3, "{mean_y}");

    // moons through its labelled kernel density estimate: two classes.
    let (status, moons) = post_json(&app, "/api/classifier_free", &request("moons", 1, 1.0)).await;
    assert_eq!(status, StatusCode::OK, "{moons}");
    assert_eq!(moons["classes"], json!(2));
    assert_eq!(moons["classifier_exact"], json!(false));
    assert!(
        probability(&moons, 1) > 0.9 && probability(&moons, 0) < 0.7,
        "{}",
        moons["class_probability"]
    );

    let base = request("8gaussians", 2, 1.0);
    for (pointer, value, field) in [
        ("/class", json!(8), "class"),
        ("/class", json!(-1), "class"),
        ("/target/kind", json!("ring"), "class"),
        ("/weight", json!(-0.5), "weight"),
        ("/weight", json!(21.0), "weight"),
        ("/n_samples", json!(0), "n_samples"),
        ("/steps", json!(100_000), "steps"),
        ("/sampler", json!("rk5"), "sampler"),
    ] {
        refuses(&app, "/api/classifier_free", &base, pointer, value, field).await;
    }
    let mut both = base.clone();
    both["run"] = json!("tiny");
    let (status, answer) = post_json(&app, "/api/classifier_free", &both).await;
    assert!(status.is_client_error() && answer["field"] == "run", "{answer}");
    let (status, answer) = post_json(&app, "/api/classifier_free", &json!({ "class": 0 })).await;
    assert!(status.is_client_error(), "{answer}");
}

/// Runs trained by the engine: a class-conditional one (labels dropped while training) is guided into the
/// class by the target's classifier; a DDPM (epsilon prediction on the variance-preserving path) is sampled
/// by the ancestral sampler and by the ODE near the target (the ODE through the engine's floor on the
/// epsilon conversion's `alpha`; without it the samples ended 17 from the modes), and, being unconditional,
/// refused for guidance. The page's
/// training request builds such configs, and refuses a conditional training on an unlabelled target and a
/// prediction the path cannot train.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_run_is_guided_and_a_ddpm_run_sampled_ancestrally() {
    let runs = tempdir("conditional-run");
    tokio::task::spawn_blocking({
        let runs = runs.clone();
        move || {
            for (name, model, flow) in [
                ("cond", "num_classes = 8\n", ""),
                (
                    "ddpm",
                    "",
                    "path = \"variance_preserving\"\nprediction = \"epsilon\"\n",
                ),
            ] {
                let text = format!(
                    "[run]\nname = \"{name}\"\nout_dir = {:?}\n[data]\ntarget = {{ kind = \"8gaussians\" }}\n\
                     [model]\nwidth = 64\ndepth = 2\n{model}[flow]\n{flow}\
                     [train]\nsteps = 3000\nbatch_size = 256\nlabel_dropout = 0.2\n\
                     [sample]\nn_samples = 64\nw2_samples = 32\nsteps = 10\n",
                    runs.display().to_string()
                );
                let config = ferroflow_engine::RunConfig::parse(&text, Path::new("run.toml")).unwrap();
                ferroflow_engine::run::train_new(&config, &mut [], None).unwrap();
            }
        }
    })
    .await
    .unwrap();
    let app = app(&runs);
    let guide = |run: &str, weight: f64| json!({ "run": run, "class": 4, "weight": weight, "n_samples": 500, "steps": 40, "seed": 1 });
    let (status, plain) = post_json(&app, "/api/classifier_free", &guide("cond", 0.0)).await;
    assert_eq!(status, StatusCode::OK, "{plain}");
    let (status, guided) = post_json(&app, "/api/classifier_free", &guide("cond", 2.0)).await;
    assert_eq!(status, StatusCode::OK, "{guided}");
    assert_eq!(plain["guided"], plain["conditional"]);
    let probability = |view: &Value, k: usize| view["class_probability"][k].as_f64().unwrap();
    let (unconditional, conditional, strong) = (
        probability(&plain, 0),
        probability(&plain, 1),
        probability(&guided, 2),
    );
    eprintln!(
        "conditional run, class 4: p(c | x) unconditional {unconditional:.3}, conditional {conditional:.3}, \
         guided w = 2 {strong:.3} ({} ms)",
        guided["compute_ms"]
    );
    assert!(unconditional < 0.3, "{unconditional}");
    assert!(conditional > 0.5, "{conditional}");
    assert!(strong > conditional, "{strong} vs {conditional}");

    for sampler in ["ddpm", "midpoint"] {
        let (status, view) = post_json(
            &app,
            "/api/run_view",
            &json!({ "run": "ddpm", "n_particles": 400, "grid": 4, "frames": 21, "seed": 3,
                     "sampler": sampler, "grid_lines": 3 }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        let (distance, near) = near_8gaussians_modes(&floats(&view["particles"][20]));
        eprintln!("DDPM run sampled by {sampler}: {distance:.3} from a mode ({near:.3} within 1)");
        assert!(distance < 1.3 && near > 0.5, "{sampler}: {distance} {near}");
        assert_eq!(view["pushed_grid"].as_array().unwrap().len(), 21);
    }
    // The runs' path coefficients, for u_t(x | x1) beside v_theta on the page: the closed form's own.
    for (run, path) in [
        (
            "cond",
            json!({ "kind": "affine", "scheduler": "cond_ot", "sigma": 0.0 }),
        ),
        ("ddpm", json!({ "kind": "variance_preserving", "sigma": 0.0 })),
    ] {
        let (status, view) = post_json(
            &app,
            "/api/run_view",
            &json!({ "run": run, "n_particles": 10, "grid": 4, "frames": 21 }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        let (status, closed) = post_json(
            &app,
            "/api/flow",
            &json!({ "target": { "kind": "8gaussians" }, "path": path, "n_particles": 10, "grid": 2,
                     "density_grid": 2, "frames": 21 }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{closed}");
        assert_eq!(view["coefficients"].as_array().unwrap().len(), 21);
        assert_eq!(view["coefficients"], closed["coefficients"], "{run}");
    }
    let (status, answer) = post_json(&app, "/api/classifier_free", &guide("ddpm", 1.0)).await;
    assert!(status.is_client_error() && answer["field"] == "run", "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("unconditional"),
        "{answer}"
    );

    // The page's training requests.
    let mut train = train_request("conditional-client", 10);
    train["conditional"] = json!(true);
    train["prediction"] = json!("epsilon");
    train["path"] = json!({ "kind": "variance_preserving", "sigma": 0.0 });
    let request: ferroflow_explorer::training::TrainRequest = serde_json::from_value(train.clone()).unwrap();
    let config = request.run_config(&runs).unwrap();
    assert_eq!(config.model.num_classes, Some(8));
    assert_eq!(config.flow.prediction, ferroflow_paths::Prediction::Epsilon);
    refuses(
        &app,
        "/api/train",
        &train,
        "/target/kind",
        json!("ring"),
        "conditional",
    )
    .await;
    refuses(
        &app,
        "/api/train",
        &train,
        "/prediction",
        json!("score"),
        "prediction",
    )
    .await;
    let mut noisy = train.clone();
    noisy["path"]["sigma"] = json!(0.1);
    let (status, answer) = post_json(&app, "/api/train", &noisy).await;
    assert!(
        status.is_client_error() && answer["field"] == "prediction",
        "{answer}"
    );
}

/// The live snapshots of a training follow the velocity its network's output stands for: an epsilon
/// network's last snapshot (16 Euler steps) lands near 8gaussians' modes; the raw epsilon read as a velocity
/// would leave the points near the origin, about 4 from any mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_training_snapshots_of_an_epsilon_network_follow_its_velocity() {
    let runs = tempdir("epsilon-stream");
    let (app, _state) = router(ServerConfig {
        runs_dir: runs.clone(),
        initial_run: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut request = train_request("epsilon-client", 3000);
    request["path"] = json!({ "kind": "variance_preserving", "sigma": 0.0 });
    request["prediction"] = json!("epsilon");
    request["width"] = json!(64);
    request["depth"] = json!(2);
    request["batch_size"] = json!(256);
    let (_stream, seen) = open_stream(addr, "/api/train", &request, "event: finished").await;
    let last = seen.rfind("event: snapshot").expect("a snapshot");
    let data = &seen[last..];
    let start = data.find("data: ").unwrap() + "data: ".len();
    let end = start + data[start..].find('\n').unwrap();
    let snapshot: Value = serde_json::from_str(&data[start..end]).expect("one JSON line");
    let (distance, near) = near_8gaussians_modes(&floats(&snapshot["points"]));
    eprintln!("last snapshot of an epsilon network: {distance:.3} from a mode ({near:.3} within 1)");
    assert!(distance < 2.0, "{distance}");
}
