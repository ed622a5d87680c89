//! `ferroflow bench2d`: the 2D benchmark of Tong et al. 2023 over a folder of configs.

use anyhow::Result;
use ferroflow_experiments::bench2d::Bench2dSettings;
use std::path::PathBuf;

/// Arguments of `ferroflow bench2d`.
#[derive(Clone, Debug, clap::Args)]
pub struct Bench2dArgs {
    /// Seeds per config (0, 1, ...).
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// Folder of benchmark configs.
    #[arg(long, default_value = "configs/bench2d")]
    pub configs: PathBuf,
    /// Override `train.steps` of every config (the published budget is the configs' own).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Only configs whose file name contains one of these texts (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Skip configs whose file name contains this text.
    #[arg(long)]
    pub exclude: Option<String>,
    /// Where the runs go.
    #[arg(long, default_value = "runs/bench2d")]
    pub out_dir: PathBuf,
    /// The Markdown report.
    #[arg(long, default_value = "docs/results-2d.md")]
    pub report: PathBuf,
}

impl Bench2dArgs {
    /// The experiment's settings.
    pub fn settings(&self) -> Bench2dSettings {
        Bench2dSettings {
            seeds: self.seeds,
            configs: self.configs.clone(),
            steps: self.steps,
            only: self.only.clone(),
            exclude: self.exclude.clone(),
            out_dir: self.out_dir.clone(),
            report: self.report.clone(),
        }
    }
}

/// Runs `ferroflow bench2d`.
pub fn run(args: &Bench2dArgs) -> Result<()> {
    ferroflow_experiments::bench2d::run(&args.settings())
}
