//! Discrete runs through the commands a user types: `train`, `train --resume`, `sample` (token ids and
//! words), `eval` (ELBO and word figures), `likelihood` (ELBO per sequence, from words or token ids), and the
//! bad input the issue names — an empty word list, tokens outside the vocabulary, sequences of the wrong
//! length, a class the model does not know, continuous-only flags — each refused with a message naming it
//! and leaving no file behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroflow-cli-discrete-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ferroflow(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroflow"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn refused(output: Output) -> String {
    assert!(
        !output.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn config(words_file: &str, steps: usize) -> String {
    format!(
        "[run]\nname = \"w\"\nseed = 2\n[data]\ntarget = {{ kind = \"words\", file = \"{words_file}\", max_length = 4 }}\n\
         [model]\nkind = \"token_mlp\"\n[model.token_mlp]\nembedding_dim = 4\nwidth = 16\ndepth = 1\n[train]\n\
         steps = {steps}\nbatch_size = 16\ncheckpoint_every = 10\nlog_every = 5\n[sample]\nn_samples = 20\nsteps = 8\n\
         w2_samples = 30\n"
    )
}

#[test]
fn a_words_run_trains_resumes_samples_evaluates_and_scores_words() {
    let dir = temp_dir("words");
    std::fs::write(
        dir.join("words.txt"),
        "cat\ndog\nbird\nfish\ncow\npig\nhen\nox\nant\nbee\nelk\nemu\ngnu\nyak\nbat\nrat\nowl\nfox\nasp\neel\n",
    )
    .unwrap();
    std::fs::write(dir.join("run.toml"), config("words.txt", 20)).unwrap();
    ok(ferroflow(&dir, &["train", "--config", "run.toml", "--quiet"]));
    let run = dir.join("runs/w");
    assert!(run.join("samples.txt").is_file() && run.join("report.md").is_file());
    let resumed = ok(ferroflow(
        &dir,
        &["train", "--resume", "runs/w", "--steps", "30", "--quiet"],
    ));
    assert!(resumed.contains("trained 30"), "{resumed}");

    let sampled = ok(ferroflow(
        &dir,
        &[
            "sample",
            "--run",
            "runs/w",
            "--n",
            "12",
            "--out",
            "s.npy",
            "--temperature",
            "0.7",
        ],
    ));
    assert!(sampled.contains("12 sequences"), "{sampled}");
    let samples: ndarray::Array2<f32> = ndarray_npy::read_npy(dir.join("s.npy")).unwrap();
    assert_eq!(samples.dim(), (12, 4));
    let words = std::fs::read_to_string(dir.join("s.txt")).unwrap();
    assert_eq!(words.lines().count(), 12);

    let evaluated = ok(ferroflow(&dir, &["eval", "--run", "runs/w"]));
    assert!(
        evaluated.contains("bits per token") && evaluated.contains("% real"),
        "{evaluated}"
    );
    let metrics = std::fs::read_to_string(run.join("metrics.json")).unwrap();
    assert!(
        metrics.contains("elbo_bits_per_token") && metrics.contains("\"words\""),
        "{metrics}"
    );

    // Likelihood of words, and of the same words as token ids: one ELBO per sequence, equal for equal input.
    std::fs::write(dir.join("query.txt"), "cat\nox\nzzzz\n").unwrap();
    let scored = ok(ferroflow(
        &dir,
        &[
            "likelihood",
            "--run",
            "runs/w",
            "--data",
            "query.txt",
            "--out",
            "q.npy",
        ],
    ));
    assert!(scored.contains("3 sequences"), "{scored}");
    let from_words: ndarray::Array1<f64> = ndarray_npy::read_npy(dir.join("q.npy")).unwrap();
    let ids = ndarray::array![
        [2.0f32, 0.0, 19.0, 26.0],
        [14.0, 23.0, 26.0, 26.0],
        [25.0, 25.0, 25.0, 25.0]
    ];
    ndarray_npy::write_npy(dir.join("ids.npy"), &ids).unwrap();
    ok(ferroflow(
        &dir,
        &[
            "likelihood",
            "--run",
            "runs/w",
            "--data",
            "ids.npy",
            "--out",
            "q2.npy",
        ],
    ));
    let from_ids: ndarray::Array1<f64> = ndarray_npy::read_npy(dir.join("q2.npy")).unwrap();
    assert_eq!(from_words, from_ids);
    assert!(
        from_words.iter().all(|&b| b < 0.0 && b.is_finite()),
        "{from_words}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_discrete_input_is_refused_by_name_and_leaves_nothing_behind() {
    let dir = temp_dir("bad");
    std::fs::write(dir.join("empty.txt"), "\n\n").unwrap();
    std::fs::write(dir.join("empty.toml"), config("empty.txt", 10)).unwrap();
    let err = refused(ferroflow(&dir, &["train", "--config", "empty.toml", "--quiet"]));
    assert!(
        err.contains("data.target.file") && err.contains("0 words"),
        "{err}"
    );
    assert!(!dir.join("runs/w").exists());

    std::fs::write(dir.join("words.txt"), "cat\ndog\nbird\nfish\ncow\n").unwrap();
    std::fs::write(dir.join("run.toml"), config("words.txt", 10)).unwrap();
    ok(ferroflow(&dir, &["train", "--config", "run.toml", "--quiet"]));

    let cases: [(&str, &[&str], &[&str]); 4] = [
        (
            "outside.npy",
            &[
                "likelihood",
                "--run",
                "runs/w",
                "--data",
                "outside.npy",
                "--out",
                "o.npy",
            ],
            &["token 27", "sequence 0", "outside the vocabulary of 27"],
        ),
        (
            "long.npy",
            &[
                "likelihood",
                "--run",
                "runs/w",
                "--data",
                "long.npy",
                "--out",
                "o.npy",
            ],
            &["5 tokens", "reads 4"],
        ),
        (
            "",
            &[
                "sample", "--run", "runs/w", "--n", "3", "--out", "o.npy", "--class", "2",
            ],
            &["class 2", "unconditional"],
        ),
        (
            "",
            &[
                "sample", "--run", "runs/w", "--n", "3", "--out", "o.npy", "--atol", "1e-4",
            ],
            &["--atol", "discrete run"],
        ),
    ];
    ndarray_npy::write_npy(
        dir.join("outside.npy"),
        &ndarray::array![[27.0f32, 0.0, 0.0, 0.0]],
    )
    .unwrap();
    ndarray_npy::write_npy(
        dir.join("long.npy"),
        &ndarray::array![[1.0f32, 2.0, 3.0, 4.0, 5.0]],
    )
    .unwrap();
    for (_, args, needles) in cases {
        let err = refused(ferroflow(&dir, args));
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: {err} lacks {needle:?}");
        }
        assert!(!dir.join("o.npy").exists(), "{args:?} left its output");
    }
    std::fs::write(dir.join("bad.txt"), "cat\nDöner\n").unwrap();
    let err = refused(ferroflow(
        &dir,
        &[
            "likelihood",
            "--run",
            "runs/w",
            "--data",
            "bad.txt",
            "--out",
            "o.npy",
        ],
    ));
    assert!(err.contains("bad.txt line 2"), "{err}");
    ndarray_npy::write_npy(dir.join("half.npy"), &ndarray::array![[1.5f32, 0.0, 0.0, 0.0]]).unwrap();
    let err = refused(ferroflow(
        &dir,
        &[
            "likelihood",
            "--run",
            "runs/w",
            "--data",
            "half.npy",
            "--out",
            "o.npy",
        ],
    ));
    assert!(err.contains("row 0, column 0") && err.contains("1.5"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
