//! Architecture invariants of ARCHITECTURE.md, checked as ordinary tests (run by `cargo test`, owned by the
//! xtask package so they build in seconds): the layering of the crates, which crates may link tch, and the
//! tidy rules every source file keeps.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One workspace package's manifest, reduced to what the invariants need.
struct Package {
    /// Dependencies that are always compiled in (not optional), by name.
    required: BTreeSet<String>,
    /// Dependencies behind a feature.
    optional: BTreeSet<String>,
}

/// Every workspace manifest (the crates and xtask), parsed, with its package name.
fn manifests() -> Vec<(String, toml::Table)> {
    let mut paths: Vec<PathBuf> = fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("Cargo.toml"))
        .collect();
    paths.push(root().join("xtask/Cargo.toml"));
    paths
        .into_iter()
        .map(|path| {
            let manifest: toml::Table = fs::read_to_string(&path).unwrap().parse().unwrap();
            let name = manifest["package"]["name"].as_str().unwrap().to_owned();
            (name, manifest)
        })
        .collect()
}

fn packages() -> BTreeMap<String, Package> {
    manifests()
        .into_iter()
        .map(|(name, manifest)| {
            let mut required = BTreeSet::new();
            let mut optional = BTreeSet::new();
            // Build and normal dependencies decide what a crate links; dev-dependencies only its tests.
            for section in ["dependencies", "build-dependencies"] {
                let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) else {
                    continue;
                };
                for (dep, spec) in deps {
                    let is_optional = spec.get("optional").and_then(|o| o.as_bool()).unwrap_or(false);
                    if is_optional { &mut optional } else { &mut required }.insert(dep.clone());
                }
            }
            (name, Package { required, optional })
        })
        .collect()
}

/// Every crate reachable from `name` through required dependencies, `name` included.
fn closure(packages: &BTreeMap<String, Package>, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![name.to_owned()];
    while let Some(next) = stack.pop() {
        if !seen.insert(next.clone()) {
            continue;
        }
        if let Some(pkg) = packages.get(&next) {
            stack.extend(pkg.required.iter().cloned());
        }
    }
    seen
}

const MATH_CRATES: [&str; 6] = [
    "ferroflow-continuity",
    "ferroflow-paths",
    "ferroflow-coupling",
    "ferroflow-solvers",
    "ferroflow-manifolds",
    "ferroflow-discrete",
];

#[test]
fn math_crates_do_not_depend_on_tch() {
    let packages = packages();
    for name in MATH_CRATES {
        let deps = closure(&packages, name);
        assert!(
            !deps.contains("tch") && !deps.contains("torch-sys"),
            "{name} reaches tch through its required dependencies: {deps:?}"
        );
    }
}

#[test]
fn only_the_torch_layer_links_tch() {
    let packages = packages();
    let allowed = [
        "ferroflow-models",
        "ferroflow-distributed",
        "ferroflow-guidance",
        "ferroflow-engine",
        "ferroflow-report",
        "ferroflow-experiments",
        "ferroflow-explorer",
        "ferroflow",
    ];
    for (name, pkg) in &packages {
        if pkg.required.contains("tch") {
            assert!(
                allowed.contains(&name.as_str()),
                "{name} links tch but is not in the torch layer"
            );
        }
    }
    assert!(
        packages["ferroflow-solvers"].optional.contains("tch"),
        "solvers' tch must stay optional"
    );
}

#[test]
fn xtask_stays_light() {
    let packages = packages();
    let deps = closure(&packages, "xtask");
    let workspace_crates: Vec<&String> = deps.iter().filter(|d| d.starts_with("ferroflow")).collect();
    assert!(
        workspace_crates.is_empty(),
        "xtask depends on {workspace_crates:?}; it must run them via cargo"
    );
    assert!(!deps.contains("tch"), "xtask must never link tch");
}

#[test]
fn layers_point_downwards() {
    // Layer numbers from ARCHITECTURE.md: a crate may depend only on crates of a lower layer (math < models <
    // guidance < engine < report < experiments < the `ferroflow` program); data flows one way.
    let layer = |name: &str| match name {
        "ferroflow-continuity"
        | "ferroflow-paths"
        | "ferroflow-coupling"
        | "ferroflow-solvers"
        | "ferroflow-manifolds"
        | "ferroflow-discrete" => Some(0),
        "ferroflow-models" | "ferroflow-distributed" => Some(1),
        "ferroflow-guidance" => Some(2),
        "ferroflow-engine" => Some(3),
        "ferroflow-report" => Some(4),
        // The explorer sits beside the experiments: above the engine, below the program that serves it.
        "ferroflow-experiments" | "ferroflow-explorer" => Some(5),
        "ferroflow" => Some(6),
        _ => None,
    };
    for (name, pkg) in &packages() {
        let Some(own) = layer(name) else { continue };
        for dep in &pkg.required {
            if let Some(theirs) = layer(dep) {
                assert!(
                    theirs < own || (own == 0 && theirs == 0 && name != dep),
                    "{name} (layer {own}) depends on {dep} (layer {theirs})"
                );
            }
        }
    }
    // Among the math crates, only the declared edges exist (each is useful alone).
    let math_edges: Vec<(String, String)> = packages()
        .iter()
        .filter(|(n, _)| MATH_CRATES.contains(&n.as_str()))
        .flat_map(|(n, p)| {
            p.required
                .iter()
                .filter(|d| MATH_CRATES.contains(&d.as_str()))
                .map(move |d| (n.clone(), d.clone()))
        })
        .collect();
    assert!(
        math_edges.is_empty(),
        "math crates must not depend on each other: {math_edges:?}"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 10, "found only {} Rust files", files.len());
    let undocumented: Vec<_> = files
        .iter()
        .filter(|f| !fs::read_to_string(f).unwrap().trim_start().starts_with("//!"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "files without a leading `//!` doc: {undocumented:?}"
    );
}

#[test]
fn libraries_do_not_use_anyhow() {
    let packages = packages();
    for name in [
        MATH_CRATES.as_slice(),
        &["ferroflow-models", "ferroflow-guidance", "ferroflow-distributed"],
    ]
    .concat()
    {
        assert!(
            !packages[name].required.contains("anyhow"),
            "{name} is a library: it returns typed errors (thiserror), not anyhow"
        );
    }
}

/// Which crates may name a dependency at all (in any dependency section, dev-dependencies included): one
/// crate alone knows each outside protocol.
fn crates_naming(dep: &str) -> BTreeSet<String> {
    manifests()
        .into_iter()
        .filter_map(|(name, manifest)| {
            ["dependencies", "dev-dependencies", "build-dependencies"]
                .iter()
                .filter_map(|section| manifest.get(*section).and_then(|d| d.as_table()))
                .any(|deps| deps.contains_key(dep))
                .then_some(name)
        })
        .collect()
}

#[test]
fn clap_and_the_terminal_belong_to_the_program_alone() {
    for dep in ["clap", "indicatif"] {
        let users = crates_naming(dep);
        assert_eq!(
            users,
            BTreeSet::from(["ferroflow".to_owned()]),
            "only the `ferroflow` program (crates/cli) may use {dep}"
        );
    }
}

#[test]
fn mpi_and_nccl_belong_to_the_distributed_crate_alone() {
    for dep in ["mpi", "cudarc"] {
        assert_eq!(
            crates_naming(dep),
            BTreeSet::from(["ferroflow-distributed".to_owned()]),
            "only ferroflow-distributed may talk to {dep}: the engine trains on its collective seam"
        );
    }
}

#[test]
fn plotters_belongs_to_the_report_crate_alone() {
    assert_eq!(
        crates_naming("plotters"),
        BTreeSet::from(["ferroflow-report".to_owned()]),
        "only ferroflow-report may draw"
    );
}

#[test]
fn the_engine_never_depends_on_report_experiments_or_the_program() {
    let packages = packages();
    let deps = closure(&packages, "ferroflow-engine");
    for higher in ["ferroflow-report", "ferroflow-experiments", "ferroflow"] {
        assert!(!deps.contains(higher), "the engine reaches {higher}: {deps:?}");
    }
    let report = closure(&packages, "ferroflow-report");
    assert!(
        !report.contains("ferroflow-experiments") && !report.contains("ferroflow"),
        "the report crate reaches a higher layer: {report:?}"
    );
}

#[test]
fn no_crate_picks_a_random_stream_outside_the_stream_enum() {
    // Every random stream has one named place (`ferroflow_engine::stream::Stream`); an offset added to a
    // stream number elsewhere is how two purposes once came to share one.
    let mut files = Vec::new();
    for dir in [
        "crates/engine/src",
        "crates/report/src",
        "crates/experiments/src",
        "crates/cli/src",
    ] {
        rust_files(&root().join(dir), &mut files);
    }
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        if file.ends_with("stream.rs") {
            continue;
        }
        assert!(
            !text.contains("set_stream("),
            "{} picks a ChaCha stream itself; name the purpose in Stream instead",
            file.display()
        );
    }
}
