//! `ferroflow bench discrete`'s contract with its Python peer, checked without Python: a stand-in peer (a
//! shell script) copies a fixed token array to `samples.npy` and reports made-up timings with the parameter
//! count it was handed. The test checks what the bench hands over (settings equal to the config's, a pool of
//! one batch of continuous target points per step), that the report names both programs and measures the
//! peer's tokens with the same code, and that bad peer output (a different network, a missing file, a wrong
//! shape, tokens outside the vocabulary) is refused with an error naming the file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferroflow_engine::files::{read_points, write_npy};
use ndarray::Array2;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroflow-bench-discrete-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const CONFIG: &str = r#"
[run]
name = "tiny-tokens"
seed = 3
threads = 1

[data]
target = { kind = "tokens_2d", dataset = "checkerboard", bins = 16, half_width = 4.0 }

[model]
kind = "token_mlp"

[model.token_mlp]
embedding_dim = 4
width = 16
depth = 2

[flow]
scheduler = { kind = "polynomial", exponent = 2.0 }
discrete = { source = "masked", loss = "cross_entropy" }

[train]
steps = 100
batch_size = 32
log_every = 2
ema_decay = 0.9

[sample]
n_samples = 64
steps = 8
w2_samples = 64
"#;

/// Training steps of every run here (`--steps`, overriding the config's 100).
const STEPS: usize = 6;

/// A stand-in peer: copies `tokens` to `samples.npy` and writes `peer.json` with the parameter count it was
/// handed plus `parameter_offset`; `skip_samples` leaves `samples.npy` out.
fn fake_peer(dir: &Path, tokens: &Array2<f32>, parameter_offset: i64, skip_samples: bool) -> PathBuf {
    let fixture = dir.join("tokens.npy");
    write_npy(&fixture, tokens.view()).unwrap();
    let copy = if skip_samples {
        String::new()
    } else {
        format!("cp '{}' \"$dir/samples.npy\"\n", fixture.display())
    };
    let script = format!(
        "#!/bin/sh\ndir=\"$2\"\n{copy}params=$(sed -n 's/.*\"parameters\": \\([0-9]*\\).*/\\1/p' \"$dir/settings.json\")\n\
         printf '{{\"train_s\": 0.6, \"sample_s\": 0.4, \"threads\": 2, \"parameters\": %s, \"final_loss\": 1.5}}' \
         $((params + {parameter_offset})) > \"$dir/peer.json\"\n"
    );
    let peer = dir.join("fake-python");
    std::fs::write(&peer, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&peer, std::fs::Permissions::from_mode(0o755)).unwrap();
    peer
}

/// 64 token pairs inside the 16 bins.
fn good_tokens() -> Array2<f32> {
    Array2::from_shape_fn((64, 2), |(row, col)| ((row * (3 + 4 * col)) % 16) as f32)
}

fn run_bench(dir: &Path, peer: &Path) -> Output {
    let config = dir.join("tiny.toml");
    std::fs::write(&config, CONFIG).unwrap();
    Command::new(env!("CARGO_BIN_EXE_ferroflow"))
        .args([
            "bench",
            "discrete",
            "--repeats",
            "1",
            "--steps",
            &STEPS.to_string(),
        ])
        .arg("--config")
        .arg(&config)
        .arg("--out-dir")
        .arg(dir.join("out"))
        .arg("--peer-python")
        .arg(peer)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_peer_gets_the_configs_settings_and_data_and_is_measured_by_the_same_code() {
    let dir = temp_dir("contract");
    let peer = fake_peer(&dir, &good_tokens(), 0, false);
    let output = run_bench(&dir, &peer);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", text(&output));

    let out = dir.join("out");
    let peer_dir = out.join("flow_matching");
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(peer_dir.join("settings.json")).unwrap()).unwrap();
    for (key, value) in [
        ("bins", serde_json::json!(16)),
        ("half_width", serde_json::json!(4.0)),
        ("source", serde_json::json!("masked")),
        ("loss", serde_json::json!("cross_entropy")),
        ("kappa_exponent", serde_json::json!(2.0)),
        ("embedding_dim", serde_json::json!(4)),
        ("width", serde_json::json!(16)),
        ("depth", serde_json::json!(2)),
        ("activation", serde_json::json!("selu")),
        ("steps", serde_json::json!(STEPS)),
        ("batch_size", serde_json::json!(32)),
        ("ema_decay", serde_json::json!(0.9)),
        ("sample_steps", serde_json::json!(8)),
        ("n_samples", serde_json::json!(64)),
        ("seed", serde_json::json!(3)),
    ] {
        assert_eq!(settings[key], value, "settings.json's {key}");
    }
    // One batch of continuous target points per step, from the checkerboard on [-2, 2]^2.
    let pool = read_points(&peer_dir.join("x1_pool.npy")).unwrap();
    assert_eq!(pool.dim(), (STEPS * 32, 2));
    assert!(
        pool.iter().all(|x| x.abs() <= 2.0),
        "a pool point outside the checkerboard"
    );
    assert!(
        pool.iter().any(|x| x.fract() != 0.0),
        "the pool holds bins, not points"
    );

    // Both programs are in the table; the peer's time per training step is train_s / steps, its network is
    // ferroflow's size, and its W2 and TV are measured from the fixed tokens.
    let row = |name: &str| -> Vec<String> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no {name} row in:\n{stdout}"));
        line.split('|').map(|cell| cell.trim().to_owned()).collect()
    };
    let (ours, theirs) = (row("ferroflow"), row("flow_matching"));
    assert_eq!(theirs[2], "2", "threads");
    assert_eq!(ours[3], theirs[3], "parameter counts");
    assert_eq!(
        theirs[5],
        format!("{:.3}", 600.0 / STEPS as f64),
        "ms per training step"
    );
    assert_eq!(theirs[6], "50.000", "ms per sampling step: 0.4 s over 8 steps");
    let peer_w2: f64 = theirs[8].parse().unwrap();
    let floor_w2: f64 = row("data (floor)")[8].parse().unwrap();
    assert!(
        peer_w2.is_finite() && peer_w2 > floor_w2,
        "W2 {peer_w2} against the floor {floor_w2}"
    );

    let markdown = std::fs::read_to_string(out.join("bench-discrete.md")).unwrap();
    assert!(markdown.contains("| flow_matching |") && markdown.contains("| ferroflow |"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench-discrete.json")).unwrap()).unwrap();
    assert_eq!(report["train_steps"], STEPS);
    let json_w2 = report["flow_matching"]["w2"].as_f64().unwrap();
    assert!(
        (json_w2 - peer_w2).abs() < 1e-4,
        "{json_w2} in the JSON, {peer_w2} in the table"
    );
    assert_eq!(
        report["ferroflow"]["parameters"],
        report["flow_matching"]["parameters"]
    );
}

/// Runs the bench with a peer built by `peer` and returns its failure's text.
fn refusal(name: &str, peer: impl FnOnce(&Path) -> PathBuf) -> String {
    let dir = temp_dir(name);
    let peer = peer(&dir);
    let output = run_bench(&dir, &peer);
    assert!(!output.status.success(), "accepted:\n{}", text(&output));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_peer_network_of_another_size_is_refused() {
    let err = refusal("parameters", |dir| fake_peer(dir, &good_tokens(), 1, false));
    assert!(err.contains("peer.json") && err.contains("parameters"), "{err}");
}

#[test]
fn missing_misshapen_or_out_of_vocabulary_samples_are_refused_naming_the_file() {
    let err = refusal("missing", |dir| fake_peer(dir, &good_tokens(), 0, true));
    assert!(err.contains("samples.npy"), "{err}");

    let err = refusal("shape", |dir| fake_peer(dir, &Array2::zeros((64, 3)), 0, false));
    assert!(err.contains("samples.npy") && err.contains("(64, 3)"), "{err}");

    // 16 is the mask, not a token of the vocabulary; 2.5 is no token id at all.
    for (name, value) in [("mask", 16.0), ("fraction", 2.5)] {
        let mut tokens = good_tokens();
        tokens[[7, 1]] = value;
        let err = refusal(name, |dir| fake_peer(dir, &tokens, 0, false));
        assert!(
            err.contains("samples.npy") && err.contains("row 7, column 1") && err.contains("vocabulary"),
            "{err}"
        );
    }
}
