//! `ferroflow eval`: the exact W2 of a finished run against fresh target samples, then its report.

use std::path::PathBuf;

use anyhow::Result;
use ferroflow_engine::metrics::METRICS_FILE;

/// Arguments of `ferroflow eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
}

/// Runs `ferroflow eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    if ferroflow_engine::run::is_discrete_run(&args.run)? {
        return run_discrete(args);
    }
    let metrics = ferroflow_engine::run::evaluate(&args.run)?;
    for path in ferroflow_report::write_report(&args.run)? {
        println!("wrote {}", path.display());
    }
    println!(
        "{}: W2 = {:.4} on {} samples ({:.1} s); written to {}",
        args.run.display(),
        metrics.w2.unwrap_or(f64::NAN),
        metrics.w2_samples.unwrap_or(0),
        metrics.eval_seconds.unwrap_or(0.0),
        args.run.join(METRICS_FILE).display()
    );
    Ok(())
}

/// `ferroflow eval` for a discrete run: the held-out ELBO and the sample figures
/// ([`ferroflow_engine::discrete::eval`]), then its report.
fn run_discrete(args: &EvalArgs) -> Result<()> {
    let metrics = ferroflow_engine::discrete::eval::evaluate(&args.run)?;
    for path in ferroflow_report::write_report(&args.run)? {
        println!("wrote {}", path.display());
    }
    let mut lines = vec![format!(
        "held-out ELBO: {:.4} ± {:.4} bits per token ({} sequences)",
        metrics.elbo_bits_per_token.unwrap_or(f64::NAN),
        metrics.elbo_stderr.unwrap_or(f64::NAN),
        metrics.elbo_sequences.unwrap_or(0)
    )];
    if let (Some(w2), Some(floor)) = (metrics.w2, metrics.w2_floor) {
        lines.push(format!(
            "W2 of the decoded samples = {w2:.4} (floor {floor:.4}); bin TV = {:.4} (floor {:.4}); {} samples",
            metrics.bin_tv.unwrap_or(f64::NAN),
            metrics.bin_tv_floor.unwrap_or(f64::NAN),
            metrics.w2_samples.unwrap_or(0)
        ));
    }
    if let Some(words) = &metrics.words {
        lines.push(format!(
            "words: {:.1} % real, {:.1} % novel (held-out words), {:.1} % distinct; letter TV {:.4}, length TV \
             {:.4}; {} samples",
            100.0 * words.real,
            100.0 * words.novel,
            100.0 * words.distinct,
            words.letter_tv,
            words.length_tv,
            metrics.word_samples.unwrap_or(0)
        ));
    }
    for row in metrics.token_guidance.iter().flatten() {
        lines.push(format!(
            "guidance w = {}: {:.1} % of the requested length, {:.1} % real",
            row.weight,
            100.0 * row.on_class,
            100.0 * row.real
        ));
    }
    println!("{}:", args.run.display());
    for line in lines {
        println!("  {line}");
    }
    println!(
        "  ({:.1} s; written to {})",
        metrics.eval_seconds.unwrap_or(0.0),
        args.run.join(METRICS_FILE).display()
    );
    Ok(())
}
