//! `ferroflow explore`: serves the browser explorer (`ferroflow-explorer`) on 127.0.0.1 unless `--host` says
//! otherwise, and prints the address to open.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ferroflow_explorer::{ServerConfig, serve};

/// Arguments of `ferroflow explore`.
#[derive(Debug, clap::Args)]
pub struct ExploreArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Address to listen on; anything but a loopback address exposes the explorer (and its training) to the
    /// network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// The runs folder: trainings started from the page write here, and the page lists its runs.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// A run to open at start: its name under the runs folder, or `DIR/NAME` (then DIR is the runs folder).
    #[arg(long)]
    pub run: Option<String>,
}

/// Runs `ferroflow explore` until interrupted.
pub fn run(args: &ExploreArgs) -> Result<()> {
    let (runs_dir, initial_run) = match &args.run {
        Some(run) if run.contains('/') => {
            let path = Path::new(run.trim_end_matches('/'));
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("--run {run}: no run name at its end"))?;
            let parent = path.parent().unwrap_or(Path::new("."));
            (parent.to_path_buf(), Some(name.to_owned()))
        }
        other => (args.runs_dir.clone(), other.clone()),
    };
    if let Some(name) = &initial_run {
        ferroflow_explorer::runs::run_dir(&runs_dir, name)
            .map_err(|e| anyhow::anyhow!("--run: {e} (runs folder {})", runs_dir.display()))?;
    }
    std::fs::create_dir_all(&runs_dir)
        .with_context(|| format!("cannot create the runs folder {}", runs_dir.display()))?;
    let config = ServerConfig {
        runs_dir,
        initial_run,
    };
    let addr = SocketAddr::new(args.host, args.port);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime
        .block_on(serve(config, addr, |bound| {
            println!("ferroflow explore: open http://{bound}/ (Ctrl-C to stop)");
        }))
        .with_context(|| format!("cannot serve on {addr}"))
}
