//! `ferroflow bench2d` end to end on tiny configs: the table holds every method's cells with the published
//! figure beside them, a run that fails is reported as failed with its reason while the others go on, the
//! stored metrics agree with the NPE formula, a finished run is reused only while its config is unchanged,
//! and a sweep split into job-array tasks and merged writes the report of the whole sweep.

use std::path::{Path, PathBuf};

use ferroflow_experiments::bench2d::{Bench2dSettings, Share, run};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroflow-bench2d-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tiny gaussian -> moons config; `source` replaces the standard normal source.
fn write_config(dir: &Path, file: &str, coupling: &str, source: &str) {
    let text = format!(
        "[run]\nname = \"x\"\nthreads = 1\n\n[data]\nsource = {source}\ntarget = {{ kind = \"moons\" }}\n\n\
         [model]\nwidth = 16\ndepth = 2\n\n[flow]\nsigma = 0.1\ncoupling = {{ kind = \"{coupling}\" }}\n\n\
         [train]\nsteps = 40\nbatch_size = 64\ncheckpoint_every = 0\nlog_every = 10\n\n\
         [sample]\nsolver = \"euler\"\nsteps = 10\nw2_samples = 128\n"
    );
    std::fs::write(dir.join(file), text).unwrap();
}

fn energy_of(metrics: &serde_json::Value) -> f64 {
    metrics["path_energy"].as_f64().unwrap()
}

fn metrics(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn a_failed_run_is_reported_with_its_reason_and_the_others_go_on() {
    let dir = temp_dir("table");
    let configs = dir.join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    write_config(
        &configs,
        "gaussian-moons-otcfm.toml",
        "exact_ot",
        "{ kind = \"gaussian\" }",
    );
    // Another source (its own reference), and a learning rate of 1e30: the first update throws the weights out
    // of f32's range, so the loss is infinite from the second step.
    write_config(
        &configs,
        "gaussian-moons-icfm.toml",
        "independent",
        "{ kind = \"gaussian\", std = 1e6 }",
    );
    let icfm = configs.join("gaussian-moons-icfm.toml");
    let text = std::fs::read_to_string(&icfm)
        .unwrap()
        .replace("batch_size = 64", "batch_size = 32\noptimizer = { lr = 1e30 }");
    std::fs::write(&icfm, text).unwrap();
    std::fs::write(configs.join("notes.txt"), "not a config").unwrap();
    let args = Bench2dSettings {
        seeds: 2,
        configs: configs.clone(),
        steps: None,
        only: vec![],
        exclude: None,
        out_dir: dir.join("runs"),
        report: dir.join("report.md"),
        share: None,
        merge: false,
    };
    run(&args).unwrap();

    let report = std::fs::read_to_string(&args.report).unwrap();
    let row = |label: &str, section: &str| -> String {
        let start = report.find(section).unwrap();
        report[start..]
            .lines()
            .find(|l| l.starts_with(&format!("| {label} |")))
            .unwrap_or_else(|| panic!("no {label} row under {section}:\n{report}"))
            .to_owned()
    };
    // The setting is read from the configs, and one on which they disagree says so.
    for phrase in [
        "MLP 2 x 16 SELU",
        "Adam lr 0.001 (weight decay 0)",
        "batch 32 / batch 64 (differs between configs)",
        "40 training steps, sigma = 0.1, no EMA",
        "10 Euler steps on 128 test samples",
    ] {
        assert!(report.contains(phrase), "no {phrase:?} in\n{report}");
    }
    let ot = row("OT-CFM", "## W2");
    let cells: Vec<&str> = ot.split('|').map(str::trim).collect();
    // Cells: method, N -> 8gaussians, moons -> 8gaussians, N -> moons, N -> scurve (between the outer bars).
    assert_eq!(cells[1..6], ["OT-CFM", "-", "-", cells[4], "-"], "{ot}");
    assert!(
        cells[4].contains(" ± ") && cells[4].ends_with("(pub. 0.130)"),
        "{ot}"
    );
    assert!(row("OT-CFM", "## NPE").contains("(pub. 0.083)"), "{report}");
    let icfm = row("I-CFM", "## W2");
    assert!(icfm.contains("**2 failed:") && icfm.contains("step 2"), "{icfm}");

    // The stored figures: finite, NPE from its definition, and the two seeds differ.
    let s0 = metrics(&dir.join("runs/gaussian-moons-otcfm-s0"));
    let s1 = metrics(&dir.join("runs/gaussian-moons-otcfm-s1"));
    let (energy, w2_sq, npe) = (
        s0["path_energy"].as_f64().unwrap(),
        s0["source_target_w2_sq"].as_f64().unwrap(),
        s0["npe"].as_f64().unwrap(),
    );
    assert!(energy > 0.0 && w2_sq > 0.0 && w2_sq < 100.0, "{s0}");
    // One reference per task and data: both seeds share it, the diverging config (another source) has its own.
    assert_eq!(s0["source_target_w2_sq"], s1["source_target_w2_sq"]);
    assert!(s0["source_target_w2_sq_stderr"].as_f64().unwrap() > 0.0, "{s0}");
    let reference_rows = report
        .lines()
        .filter(|l| l.starts_with("| gaussian-moons | 128 | "))
        .count();
    assert_eq!(reference_rows, 2, "{report}");
    assert!((npe - (energy - w2_sq).abs() / w2_sq).abs() < 1e-12, "{s0}");
    assert_ne!(s0["w2"], s1["w2"]);
    // Euler paths never beat straight optimal ones to the same end points.
    for m in [&s0, &s1] {
        let own = m["source_samples_w2_sq"].as_f64().unwrap();
        let excess = m["path_excess"].as_f64().unwrap();
        assert!(
            excess >= 0.0 && (excess - (energy_of(m) - own) / own).abs() < 1e-12,
            "{m}"
        );
    }
    assert!(
        row("OT-CFM", "## Path energy in excess").contains(" ± "),
        "{report}"
    );
    assert!(!dir.join("runs/gaussian-moons-icfm-s0/model.safetensors").exists());

    // Text below the marker is the reader's: a new run keeps it under the new tables.
    let notes = format!(
        "{}\n\n## Notes\n\nWritten by hand.\n",
        ferroflow_experiments::bench2d::KEEP_MARKER
    );
    std::fs::write(&args.report, format!("{report}{notes}")).unwrap();

    // A second run reuses the finished runs; another training budget trains them again.
    let model = dir.join("runs/gaussian-moons-otcfm-s0/model.safetensors");
    let written = std::fs::metadata(&model).unwrap().modified().unwrap();
    run(&Bench2dSettings {
        only: vec!["otcfm".into()],
        ..args.clone()
    })
    .unwrap();
    assert_eq!(std::fs::metadata(&model).unwrap().modified().unwrap(), written);
    let rewritten = std::fs::read_to_string(&args.report).unwrap();
    assert!(
        rewritten.starts_with("# 2D benchmark results") && rewritten.ends_with(&notes),
        "{rewritten}"
    );
    assert_eq!(rewritten.matches("## W2 (lower").count(), 1, "{rewritten}");
    assert_eq!(metrics(&dir.join("runs/gaussian-moons-otcfm-s0")), s0);
    run(&Bench2dSettings {
        only: vec!["otcfm".into()],
        steps: Some(20),
        seeds: 1,
        ..args.clone()
    })
    .unwrap();
    assert_eq!(
        metrics(&dir.join("runs/gaussian-moons-otcfm-s0"))["train_steps"].as_u64(),
        Some(20)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_empty_config_folder_is_refused_by_name() {
    let dir = temp_dir("empty");
    let err = run(&Bench2dSettings {
        seeds: 1,
        configs: dir.clone(),
        steps: None,
        only: vec![],
        exclude: None,
        out_dir: dir.join("runs"),
        report: dir.join("report.md"),
        share: None,
        merge: false,
    })
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(!dir.join("report.md").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sweep_split_into_tasks_merges_into_the_whole_report() {
    let dir = temp_dir("sweep");
    let configs = dir.join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    write_config(
        &configs,
        "gaussian-moons-otcfm.toml",
        "exact_ot",
        "{ kind = \"gaussian\" }",
    );
    write_config(
        &configs,
        "gaussian-moons-icfm.toml",
        "independent",
        "{ kind = \"gaussian\" }",
    );
    let whole = Bench2dSettings {
        seeds: 2,
        configs: configs.clone(),
        steps: Some(10),
        only: vec![],
        exclude: None,
        out_dir: dir.join("whole"),
        report: dir.join("whole.md"),
        share: None,
        merge: false,
    };
    run(&whole).unwrap();
    let split = Bench2dSettings {
        out_dir: dir.join("split"),
        report: dir.join("split.md"),
        ..whole.clone()
    };
    // Task 0 of 3 takes runs 0 and 3 of the four (icfm s0, otcfm s1); merging now names the missing ones.
    run(&Bench2dSettings {
        share: Some(Share::new(0, 3).unwrap()),
        ..split.clone()
    })
    .unwrap();
    assert!(!split.report.exists(), "a task wrote the report");
    let mut trained: Vec<String> = std::fs::read_dir(&split.out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    trained.sort();
    assert_eq!(trained, ["gaussian-moons-icfm-s0", "gaussian-moons-otcfm-s1"]);
    let err = format!(
        "{:#}",
        run(&Bench2dSettings {
            merge: true,
            ..split.clone()
        })
        .unwrap_err()
    );
    assert!(
        err.contains("2 of the sweep's 4 runs are not finished")
            && err.contains("gaussian-moons-icfm-s1")
            && err.contains("gaussian-moons-otcfm-s0"),
        "{err}"
    );
    assert!(!split.report.exists());
    for index in 1..3 {
        run(&Bench2dSettings {
            share: Some(Share::new(index, 3).unwrap()),
            ..split.clone()
        })
        .unwrap();
    }
    run(&Bench2dSettings {
        merge: true,
        ..split.clone()
    })
    .unwrap();
    // Every run is a pure function of its config and seed: the merged report equals the whole sweep's, but
    // for the command line it names and the training times.
    let tables = |path: &Path| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("| ") && !l.contains("seconds") && !l.contains(" s |"))
            .map(str::to_owned)
            .collect()
    };
    let (a, b) = (tables(&whole.report), tables(&split.report));
    assert!(a.len() >= 4, "{a:?}");
    assert_eq!(a, b);
    std::fs::remove_dir_all(&dir).unwrap();
}
