//! `ferroflow bench riemannian`'s contract with its Python peer, checked without Python: a stand-in peer (a
//! shell script) returns the source points it was given as its "samples". The test checks what the bench
//! hands over (settings equal to the config's, pools of one batch per step lying on the manifold, the same
//! source points as `eval`) and that the peer's row is measured: its W2 is the W2 of those source points.

use std::path::PathBuf;
use std::process::Command;

use ferroflow_engine::files::read_points;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ferroflow-bench-riemannian-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const CONFIG: &str = r#"
[run]
name = "tiny-sphere"
seed = 5

[data]
manifold = { kind = "sphere", dim = 3 }
target = { kind = "vmf_mixture", weights = [1.0, 1.0], means = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], concentrations = [10.0, 10.0] }

[model]
width = 24
depth = 2

[train]
steps = 12
batch_size = 32

[sample]
solver = "midpoint"
steps = 6
n_samples = 50
w2_samples = 64
"#;

/// A peer that copies its source points to `samples.npy` and reports made-up timings.
const FAKE_PEER: &str = r#"#!/bin/sh
dir="$2"
cp "$dir/x0_eval.npy" "$dir/samples.npy"
printf '{"train_s": 1.2, "sample_s": 0.5, "threads": 2, "final_loss": 0.1}' > "$dir/peer.json"
"#;

#[test]
fn the_peer_gets_the_configs_settings_and_data_and_is_measured_by_the_same_code() {
    let dir = temp_dir("contract");
    let configs = dir.join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    std::fs::write(configs.join("tiny-sphere.toml"), CONFIG).unwrap();
    let peer = dir.join("fake-python");
    std::fs::write(&peer, FAKE_PEER).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&peer, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out_dir = dir.join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_ferroflow"))
        .args(["bench", "riemannian", "--repeats", "1", "--configs"])
        .arg(&configs)
        .arg("--out-dir")
        .arg(&out_dir)
        .arg("--peer-python")
        .arg(&peer)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let peer_dir = out_dir.join("tiny-sphere-flow_matching");
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(peer_dir.join("settings.json")).unwrap()).unwrap();
    assert_eq!(settings["manifold"], "sphere");
    assert_eq!(settings["width"], 24);
    assert_eq!(settings["depth"], 2);
    assert_eq!(settings["steps"], 12);
    assert_eq!(settings["batch_size"], 32);
    assert_eq!(settings["ode_steps"], 6);
    assert_eq!(settings["coupling"], "independent");
    for name in ["x0_pool.npy", "x1_pool.npy"] {
        let pool = read_points(&peer_dir.join(name)).unwrap();
        assert_eq!(pool.dim(), (12 * 32, 3), "{name}");
        for row in pool.rows() {
            let norm = row.dot(&row).sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{name}: a point of norm {norm}");
        }
    }
    // The pools are two different samples, not one stream read twice.
    let (x0, x1) = (
        read_points(&peer_dir.join("x0_pool.npy")).unwrap(),
        read_points(&peer_dir.join("x1_pool.npy")).unwrap(),
    );
    assert_ne!(x0.row(0), x1.row(0));

    // The table's row: the peer's W2 is measured (the W2 of the source points, far above the trained
    // flow's floor) and its time per step is its train_s / steps = 100 ms.
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| tiny-sphere |"))
        .unwrap_or_else(|| panic!("no row in:\n{stdout}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let floor: f64 = cells[3].parse().unwrap();
    let peer_w2: f64 = cells[5].parse().unwrap_or_else(|_| panic!("no peer W2 in {row}"));
    assert!(peer_w2 > floor, "{row}");
    assert!(cells[8].starts_with("100.00 (2 thr)"), "{row}");
}
