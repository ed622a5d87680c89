//! `ferroflow bench2d`: the 2D benchmark of Tong et al. 2023 over a folder of configs.

use anyhow::{Context, Result, bail};
use ferroflow_experiments::bench2d::{Bench2dSettings, Share};
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
    /// Run only this task's share of the (config, seed) runs, as one task of a job array (default: Slurm's
    /// `SLURM_ARRAY_TASK_ID` minus `SLURM_ARRAY_TASK_MIN`); no report is written.
    #[arg(long, requires = "tasks", conflicts_with = "merge")]
    pub task_index: Option<usize>,
    /// The number of tasks the sweep is split into (default: `SLURM_ARRAY_TASK_COUNT`).
    #[arg(long, requires = "task_index", conflicts_with = "merge")]
    pub tasks: Option<usize>,
    /// Train nothing: write the report from the runs that the tasks finished, refusing if one is missing.
    #[arg(long)]
    pub merge: bool,
}

/// The variables Slurm sets in each task of a job array.
const SLURM_TASK: [&str; 3] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_COUNT",
];

/// This task's share: from the flags, else from Slurm's array variables, else none (the whole sweep).
fn share(args: &Bench2dArgs, env: impl Fn(&str) -> Option<String>) -> Result<Option<Share>> {
    if let (Some(index), Some(count)) = (args.task_index, args.tasks) {
        return Share::new(index, count).map(Some).context("--task-index");
    }
    if args.merge {
        return Ok(None);
    }
    let values: Vec<Option<String>> = SLURM_TASK.iter().map(|v| env(v)).collect();
    let [Some(id), min, Some(count)] = values.as_slice() else {
        return Ok(None);
    };
    let number = |name: &str, text: &str| -> Result<usize> {
        text.trim()
            .parse()
            .with_context(|| format!("{name} = {text:?} is not a task number"))
    };
    let id = number(SLURM_TASK[0], id)?;
    let min = match min {
        Some(min) => number(SLURM_TASK[1], min)?,
        None => 0,
    };
    let count = number(SLURM_TASK[2], count)?;
    let Some(index) = id.checked_sub(min) else {
        bail!("{} = {id} is below {} = {min}", SLURM_TASK[0], SLURM_TASK[1]);
    };
    // Slurm arrays may skip numbers (--array=0,4,9); the share needs consecutive tasks.
    Share::new(index, count).map(Some).with_context(|| {
        format!(
            "from Slurm's job array: use a consecutive array (--array=0-{}), or pass --task-index and --tasks",
            count.saturating_sub(1)
        )
    })
}

impl Bench2dArgs {
    /// The experiment's settings, the share read from the flags or from `env` (Slurm's variables).
    pub fn settings(&self, env: impl Fn(&str) -> Option<String>) -> Result<Bench2dSettings> {
        Ok(Bench2dSettings {
            seeds: self.seeds,
            configs: self.configs.clone(),
            steps: self.steps,
            only: self.only.clone(),
            exclude: self.exclude.clone(),
            out_dir: self.out_dir.clone(),
            report: self.report.clone(),
            share: share(self, env)?,
            merge: self.merge,
        })
    }
}

/// Runs `ferroflow bench2d`.
pub fn run(args: &Bench2dArgs) -> Result<()> {
    let settings = args.settings(|name| std::env::var(name).ok())?;
    ferroflow_experiments::bench2d::run(&settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: Bench2dArgs,
    }

    fn parse(flags: &[&str]) -> Bench2dArgs {
        Wrap::try_parse_from(std::iter::once("bench2d").chain(flags.iter().copied()))
            .unwrap()
            .args
    }

    fn slurm<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_share_comes_from_flags_then_from_slurm() {
        let none = slurm(&[]);
        assert_eq!(parse(&[]).settings(&none).unwrap().share, None);
        let flags = parse(&["--task-index", "2", "--tasks", "3"]);
        assert_eq!(
            flags.settings(&none).unwrap().share,
            Some(Share::new(2, 3).unwrap())
        );
        // Slurm's array --array=1-4: ids 1..=4, min 1, count 4.
        let env = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        let share = parse(&[]).settings(slurm(&env)).unwrap().share;
        assert_eq!(share, Some(Share::new(2, 4).unwrap()));
        // Flags win over the environment; --merge ignores it.
        assert_eq!(
            flags.settings(slurm(&env)).unwrap().share,
            Some(Share::new(2, 3).unwrap())
        );
        assert_eq!(parse(&["--merge"]).settings(slurm(&env)).unwrap().share, None);
    }

    #[test]
    fn bad_shares_are_refused_by_name() {
        let err = parse(&["--task-index", "3", "--tasks", "3"])
            .settings(slurm(&[]))
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("task index 3 is outside the 3 task(s)"),
            "{err:#}"
        );
        let sparse = [
            ("SLURM_ARRAY_TASK_ID", "9"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ];
        let err = parse(&[]).settings(slurm(&sparse)).unwrap_err();
        assert!(format!("{err:#}").contains("consecutive array"), "{err:#}");
        let garbage = [("SLURM_ARRAY_TASK_ID", "x"), ("SLURM_ARRAY_TASK_COUNT", "3")];
        let err = parse(&[]).settings(slurm(&garbage)).unwrap_err();
        assert!(
            format!("{err:#}").contains("SLURM_ARRAY_TASK_ID = \"x\""),
            "{err:#}"
        );
        assert!(Wrap::try_parse_from(["bench2d", "--merge", "--tasks", "2", "--task-index", "0"]).is_err());
        assert!(Wrap::try_parse_from(["bench2d", "--tasks", "2"]).is_err());
    }
}
