//! `ferroflow likelihood` end to end: a tiny trained run measured through the library and through the
//! program, which must agree, read Fortran-order files as their C-order twins, and refuse points of the
//! wrong dimension with both shapes and files without points by name.

use std::path::PathBuf;
use std::process::Command;

use ferroflow_engine::RunConfig;
use ferroflow_engine::likelihood::log_likelihood;
use ferroflow_engine::sample::TrainedFlow;
use ferroflow_models::DivergenceEstimator;
use ferroflow_solvers::{DataScaling, Method, OdeOptions};
use ndarray::{Array1, array};
use tch::{Device, Kind, Tensor};

/// `n` points around the mixture (seeded), as `[n, 2]` float32.
fn points(n: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn([n, 2], (Kind::Float, Device::Cpu)) * 1.8
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroflow-likelihood-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_trained_run_through_the_library_and_the_cli() {
    let out_dir = temp_dir("run");
    let text = format!(
        r#"
[run]
name = "tiny"
out_dir = "{}"
seed = 3
threads = 1

[data]
source = {{ kind = "gaussian" }}
target = {{ kind = "8gaussians" }}

[model]
width = 32
depth = 2

[train]
steps = 200
batch_size = 128
checkpoint_every = 0

[sample]
n_samples = 200
solver = "euler"
steps = 20
w2_samples = 200
"#,
        out_dir.display()
    );
    let config = RunConfig::parse(&text, std::path::Path::new("<test>")).unwrap();
    let run_dir = ferroflow_engine::run::train_new(&config, &mut [], None).unwrap();
    let flow = TrainedFlow::load(&run_dir).unwrap();

    let data = points(100, 6);
    let options = OdeOptions::fixed(Method::Midpoint, 20);
    let exact = log_likelihood(&flow, &data, DivergenceEstimator::Exact, &options).unwrap();
    assert_eq!(exact.log_density.len(), 100);
    assert!(exact.log_density.iter().all(|v| v.is_finite()));
    assert_eq!(exact.field_evals, 40);
    let bits = exact.bits_per_dim(2, DataScaling::Dequantized);
    assert!((bits + exact.mean() / (2.0 * std::f64::consts::LN_2)).abs() < 1e-12);

    let wrong = Tensor::zeros([100, 3], (Kind::Float, Device::Cpu));
    let err = log_likelihood(&flow, &wrong, DivergenceEstimator::Exact, &options).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("[100, 3]") && message.contains("[100, 2]"),
        "{message}"
    );

    // The CLI writes float64 [n] and refuses the wrong dimension with both shapes.
    let data_path = out_dir.join("points.npy");
    ferroflow_engine::files::write_npy(&data_path, ferroflow_engine::sample::to_array(&data).view()).unwrap();
    let out_path = out_dir.join("log_density.npy");
    let output = Command::new(env!("CARGO_BIN_EXE_ferroflow"))
        .args(["likelihood", "--run"])
        .arg(&run_dir)
        .arg("--data")
        .arg(&data_path)
        .arg("--out")
        .arg(&out_path)
        .args(["--solver", "midpoint", "--steps", "20"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("bits/dim"), "{stdout}");
    let written: Array1<f64> =
        ndarray_npy::ReadNpyExt::read_npy(std::fs::File::open(&out_path).unwrap()).unwrap();
    assert_eq!(written.len(), 100);
    for (a, b) in written.iter().zip(&exact.log_density) {
        assert!((a - b).abs() < 1e-4, "CLI {a} vs library {b}");
    }

    let wrong_path = out_dir.join("wrong.npy");
    ferroflow_engine::files::write_npy(&wrong_path, array![[0.0f32, 1.0, 2.0], [1.0, 2.0, 3.0]].view())
        .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ferroflow"))
        .args(["likelihood", "--run"])
        .arg(&run_dir)
        .arg("--data")
        .arg(&wrong_path)
        .arg("--out")
        .arg(out_dir.join("never.npy"))
        .args(["--hutchinson", "2"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[2, 3]") && stderr.contains("[2, 2]"), "{stderr}");
    assert!(!out_dir.join("never.npy").exists());

    // The same points stored column by column give the same log-densities.
    let c_order = ferroflow_engine::sample::to_array(&data);
    let fortran = c_order.t().as_standard_layout().into_owned().reversed_axes();
    assert!(!fortran.is_standard_layout() && fortran == c_order);
    let fortran_path = out_dir.join("fortran.npy");
    ndarray_npy::WriteNpyExt::write_npy(&fortran, std::fs::File::create(&fortran_path).unwrap()).unwrap();
    let fortran_out = out_dir.join("fortran-log-density.npy");
    let output = Command::new(env!("CARGO_BIN_EXE_ferroflow"))
        .args(["likelihood", "--run"])
        .arg(&run_dir)
        .arg("--data")
        .arg(&fortran_path)
        .arg("--out")
        .arg(&fortran_out)
        .args(["--solver", "midpoint", "--steps", "20"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let from_fortran: Array1<f64> =
        ndarray_npy::ReadNpyExt::read_npy(std::fs::File::open(&fortran_out).unwrap()).unwrap();
    assert_eq!(from_fortran, written);

    // No points: refused by name instead of a NaN mean.
    let empty_path = out_dir.join("no-points.npy");
    ferroflow_engine::files::write_npy(&empty_path, ndarray::Array2::<f32>::zeros((0, 2)).view()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ferroflow"))
        .args(["likelihood", "--run"])
        .arg(&run_dir)
        .arg("--data")
        .arg(&empty_path)
        .arg("--out")
        .arg(out_dir.join("never.npy"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no-points.npy") && stderr.contains("no points"),
        "{stderr}"
    );
    assert!(!out_dir.join("never.npy").exists());
    let _ = std::fs::remove_dir_all(&out_dir);
}
