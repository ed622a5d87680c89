//! Discrete runs train through the one training loop: tiny `tokens_2d` and `words` runs write a normal run
//! folder, their batches are a pure function of `(seed, step)`, and a run interrupted half way and resumed ends
//! with exactly the weights and loss curve of the uninterrupted run.

use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};

use ferroflow_engine::discrete::{TokenBatchMaker, TokenData, train};
use ferroflow_engine::distributed::Launch;
use ferroflow_engine::train::{CHECKPOINT_FILE, MODEL_FILE, Start};
use ferroflow_engine::train::{OnStep, StepInfo};
use ferroflow_engine::{RunConfig, TrainError};
use ferroflow_models::checkpoint::load_tensors;

static TORCH_SEED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroflow-discrete-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(out_dir: &Path, target: &str, extra: &str) -> RunConfig {
    let text = format!(
        "[run]\nname = \"r\"\nout_dir = \"{}\"\nseed = 5\n[data]\ntarget = {target}\n[model]\nkind = \
         \"token_mlp\"\n[model.token_mlp]\nembedding_dim = 4\nwidth = 16\ndepth = 1\n[train]\nsteps = 6\n\
         batch_size = 16\ncheckpoint_every = 3\nlog_every = 2\n{extra}",
        out_dir.display()
    );
    RunConfig::parse(&text, Path::new("test.toml")).unwrap()
}

fn flat_of(path: &Path) -> Vec<(String, Vec<f64>)> {
    let mut named: Vec<(String, Vec<f64>)> = load_tensors(path)
        .unwrap()
        .into_iter()
        .filter(|(name, _)| name != "state.train_seconds")
        .map(|(name, tensor)| {
            let values = Vec::<f64>::try_from(tensor.to_kind(tch::Kind::Double).reshape([-1])).unwrap();
            (name, values)
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Trains `config` straight through in one folder and in two invocations (3 steps, then resumed to 6) in
/// another, and checks the checkpoints agree bit for bit.
fn resumes_bit_identically(config: &RunConfig, root: &Path) {
    // libtorch's seed is global: runs that build networks at once would draw each other's initial weights.
    let _serial = TORCH_SEED.lock().unwrap_or_else(|e| e.into_inner());
    let straight = root.join("straight");
    std::fs::create_dir_all(&straight).unwrap();
    let summary = train(config, &straight, Start::Fresh, None, &Launch::single(), &mut []).unwrap();
    assert_eq!(summary.steps_run, 6);
    assert_eq!(summary.loss_curve.len(), 3);
    assert!(
        summary
            .loss_curve
            .iter()
            .all(|p| p.loss.is_finite() && p.loss > 0.0)
    );
    for file in [CHECKPOINT_FILE, MODEL_FILE, "config.toml"] {
        assert!(straight.join(file).is_file(), "{file}");
    }
    let resumed = root.join("resumed");
    std::fs::create_dir_all(&resumed).unwrap();
    // Interrupted like Ctrl-C: the flag raised during step 2 makes the checkpoint observer save step 3 and stop.
    let stop = AtomicBool::new(false);
    let mut raise = OnStep(|info: &StepInfo| {
        if info.step == 2 {
            stop.store(true, Ordering::SeqCst);
        }
    });
    let err = train(
        config,
        &resumed,
        Start::Fresh,
        Some(&stop),
        &Launch::single(),
        &mut [&mut raise],
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::Interrupted { step: 3 }), "{err}");
    let rest = train(config, &resumed, Start::Resume, None, &Launch::single(), &mut []).unwrap();
    assert_eq!(rest.steps_run, 3);
    assert_eq!(rest.loss_curve, summary.loss_curve);
    assert_eq!(
        flat_of(&straight.join(CHECKPOINT_FILE)),
        flat_of(&resumed.join(CHECKPOINT_FILE))
    );
    // The config written reads back as the same run.
    let written = RunConfig::load(&straight.join("config.toml")).unwrap();
    assert_eq!(&written, config);
}

#[test]
fn a_tokens_2d_run_trains_checkpoints_and_resumes_bit_identically() {
    let root = scratch("grid");
    let config = config(
        &root,
        "{ kind = \"tokens_2d\", dataset = \"checkerboard\", bins = 8 }",
        "[flow.discrete]\nsource = \"uniform\"\nloss = \"generalized_kl\"\n",
    );
    // Batches are a pure function of (seed, step), with tokens in range.
    let maker = TokenBatchMaker::new(&config, TokenData::load(&config).unwrap()).unwrap();
    let (a, b, c) = (
        maker.make(1).unwrap(),
        maker.make(1).unwrap(),
        maker.make(2).unwrap(),
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.x_t.iter().chain(&a.x1).all(|&token| token < 8));
    // The checkerboard lies in [-2, 2]^2: bins 2..=5 of the 8 over [-4, 4].
    assert!(a.x1.iter().all(|&token| (2..=5).contains(&token)), "{:?}", a.x1);
    assert!(a.t.iter().all(|&t| t > 0.0 && t < 1.0));
    resumes_bit_identically(&config, &root);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_words_run_from_a_small_word_file_trains_and_resumes_bit_identically() {
    let root = scratch("words");
    let file = root.join("words.txt");
    std::fs::write(
        &file,
        "cat\ndog\nbird\nfish\ncow\nPig\nhen\nox\nemu\nyak\nant\nbee\nextraordinary\nit's\n",
    )
    .unwrap();
    let config = config(
        &root,
        &format!(
            "{{ kind = \"words\", file = \"{}\", max_length = 4, held_out = 0.25 }}",
            file.display()
        ),
        "",
    );
    let TokenData::Words(split) = TokenData::load(&config).unwrap() else {
        panic!("words load as words")
    };
    assert_eq!(split.train.len() + split.held_out.len(), 12);
    assert_eq!(split.held_out.len(), 3);
    let maker = TokenBatchMaker::new(&config, TokenData::Words(split.clone())).unwrap();
    let batch = maker.make(3).unwrap();
    // Masked source: the mask is state 27; data rows are training words.
    assert!(batch.x_t.iter().all(|&token| token <= 27));
    for row in batch.x1.rows() {
        let word = ferroflow_engine::tokens::decode_word(row.as_slice().unwrap());
        assert!(split.train.contains(&word), "{word}");
    }
    resumes_bit_identically(&config, &root);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_tensor_ctmc_step_equals_the_array_step_on_random_inputs() {
    use ferroflow_discrete::{Corrector, Kappa, MixturePath, Source, euler_step, jump_probabilities};
    use ferroflow_engine::discrete::{euler_step_tensor, jump_probabilities_tensor};
    use ndarray::{Array2, Array3};
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    // Jumps counted over every case, so the comparison of next states is not only of states that stay.
    let mut jumped = 0;
    for (source, vocab_size) in [(Source::Masked, 5usize), (Source::Uniform, 4)] {
        let path = MixturePath::new(vocab_size, source).unwrap();
        let n_states = path.n_states();
        for (t, step_size) in [(0.1, 0.05), (0.5, 0.3), (0.8, 0.2), (0.95, 0.05)] {
            let schedule = |t: f64| Kappa {
                value: t * t,
                derivative: 2.0 * t,
            };
            let (batch, length) = (40, 3);
            // Random posteriors over the data tokens (zero on the mask) and random states.
            let mut probs = Array3::from_shape_fn((batch, length, n_states), |(_, _, s)| {
                if s < vocab_size {
                    rng.random::<f64>() + 0.01
                } else {
                    0.0
                }
            });
            for mut row in probs.lanes_mut(ndarray::Axis(2)) {
                let sum = row.sum();
                row.mapv_inplace(|p| p / sum);
            }
            let x_t = Array2::from_shape_fn((batch, length), |_| rng.random_range(0..n_states as u32));
            let expected = jump_probabilities(
                &path,
                &schedule,
                probs.view(),
                x_t.view(),
                t,
                step_size,
                &Corrector::Off,
            )
            .unwrap();
            let kappa = schedule(t);
            let probs_tensor = tch::Tensor::from_slice(probs.as_slice().unwrap()).view([
                batch as i64,
                length as i64,
                n_states as i64,
            ]);
            let x_tensor = tch::Tensor::from_slice(&x_t.iter().map(|&v| i64::from(v)).collect::<Vec<_>>())
                .view([batch as i64, length as i64]);
            let jumps = jump_probabilities_tensor(
                &probs_tensor,
                &x_tensor,
                kappa.derivative / (1.0 - kappa.value),
                step_size,
            );
            let got = Vec::<f64>::try_from(jumps.reshape([-1])).unwrap();
            for (a, b) in got.iter().zip(expected.iter()) {
                assert!((a - b).abs() < 1e-12, "t = {t}: {a} vs {b}");
            }
            // With the corrector: the marginal and corrector rates' target, stepped with coefficient 1.
            let corrector = Corrector::Power {
                scale: 0.7,
                t_exponent: 1.0,
                one_minus_t_exponent: 0.5,
            };
            let expected = jump_probabilities(
                &path,
                &schedule,
                probs.view(),
                x_t.view(),
                t,
                step_size,
                &corrector,
            )
            .unwrap();
            let coefficient = kappa.derivative / (1.0 - kappa.value);
            let rates = ferroflow_engine::discrete::corrected_rate_target(
                &probs_tensor,
                &path,
                kappa.value,
                kappa.derivative,
                corrector.coefficient(t).unwrap(),
                coefficient,
            );
            let corrected = jump_probabilities_tensor(&rates, &x_tensor, 1.0, step_size);
            let got = Vec::<f64>::try_from(corrected.reshape([-1])).unwrap();
            for (a, b) in got.iter().zip(expected.iter()) {
                assert!((a - b).abs() < 1e-12, "corrector, t = {t}: {a} vs {b}");
            }
            // The same uniforms give the same next states.
            let seed: u64 = rng.random();
            let next = euler_step(
                &path,
                &schedule,
                probs.view(),
                x_t.view(),
                t,
                step_size,
                &Corrector::Off,
                &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            )
            .unwrap();
            let mut uniforms_rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let uniforms: Vec<f64> = (0..batch * length)
                .map(|_| uniforms_rng.random::<f64>())
                .collect();
            let stepped = euler_step_tensor(
                &jumps,
                &x_tensor,
                &tch::Tensor::from_slice(&uniforms).view([batch as i64, length as i64]),
            );
            let stepped: Vec<u32> = Vec::<i64>::try_from(stepped.reshape([-1]))
                .unwrap()
                .into_iter()
                .map(|v| v as u32)
                .collect();
            assert_eq!(stepped, next.iter().copied().collect::<Vec<_>>(), "t = {t}");
            jumped += next.iter().zip(&x_t).filter(|(a, b)| a != b).count();
        }
    }
    assert!(jumped > 50, "{jumped} jumps");
}

#[test]
fn the_ctmc_sampler_unmasks_every_position_and_is_reproducible_from_its_stream() {
    use ferroflow_engine::discrete::{TokenSampling, build_token_net, path_and_kappa, sample_tokens};
    use ferroflow_engine::stream::Stream;
    let root = scratch("sampler");
    let config = config(
        &root,
        "{ kind = \"tokens_2d\", dataset = \"moons\", bins = 6 }",
        "",
    );
    let net = {
        let _serial = TORCH_SEED.lock().unwrap_or_else(|e| e.into_inner());
        build_token_net(&config).unwrap()
    };
    let (path, kappa) = path_and_kappa(&config).unwrap();
    let draw = |temperature: f64| {
        let mut rng = Stream::Sample.rng(config.run.seed);
        sample_tokens(
            &*net,
            &net.params().views(),
            &path,
            &kappa,
            200,
            &TokenSampling {
                steps: 10,
                temperature,
                guidance: None,
                carry_over: false,
                corrector: ferroflow_discrete::Corrector::Off,
            },
            &mut rng,
        )
        .unwrap()
    };
    let samples = draw(1.0);
    assert_eq!(samples.dim(), (200, 2));
    // The mask is state 6: a masked source leaves none after the last step (kappa_1 = 1).
    assert!(samples.iter().all(|&token| token < 6), "{samples:?}");
    // Nor with kappa_t = t^2, whose Euler coefficient 2t / (1 - t^2) would leave h / 2 of them masked.
    let mut squared = config.clone();
    squared.flow.scheduler = ferroflow_paths::SchedulerKind::Polynomial { exponent: 2.0 };
    let (_, kappa_squared) = path_and_kappa(&squared).unwrap();
    let many = sample_tokens(
        &*net,
        &net.params().views(),
        &path,
        &kappa_squared,
        4000,
        &TokenSampling {
            steps: 4,
            temperature: 1.0,
            guidance: None,
            carry_over: false,
            corrector: ferroflow_discrete::Corrector::Off,
        },
        &mut Stream::Sample.rng(1),
    )
    .unwrap();
    assert!(many.iter().all(|&token| token < 6));
    assert_eq!(samples, draw(1.0));
    // A low temperature concentrates the untrained posterior: fewer distinct pairs.
    let distinct = |s: &ndarray::Array2<u32>| {
        s.rows()
            .into_iter()
            .map(|r| (r[0], r[1]))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert!(
        distinct(&draw(0.05)) < distinct(&samples),
        "{} vs {}",
        distinct(&draw(0.05)),
        distinct(&samples)
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_new_words_run_leaves_a_normal_run_folder_with_samples_txt_matching_samples_npy() {
    let root = scratch("folder");
    let file = root.join("words.txt");
    std::fs::write(&file, "cat\ndog\nbird\nfish\ncow\npig\nhen\nox\n").unwrap();
    let config = config(
        &root,
        &format!(
            "{{ kind = \"words\", file = \"{}\", max_length = 4 }}",
            file.display()
        ),
        "[sample]\nn_samples = 40\nsteps = 8\n",
    );
    let run_dir = {
        let _serial = TORCH_SEED.lock().unwrap_or_else(|e| e.into_inner());
        ferroflow_engine::run::train_new_discrete(&config, &mut [], None).unwrap()
    };
    for name in [
        "config.toml",
        CHECKPOINT_FILE,
        MODEL_FILE,
        "loss.csv",
        "metrics.json",
        "samples.npy",
        "samples.txt",
    ] {
        assert!(run_dir.join(name).is_file(), "{name}");
    }
    let samples: ndarray::Array2<f32> = ndarray_npy::read_npy(run_dir.join("samples.npy")).unwrap();
    assert_eq!(samples.dim(), (40, 4));
    assert!(
        samples
            .iter()
            .all(|&t| t.fract() == 0.0 && (0.0..27.0).contains(&t)),
        "{samples:?}"
    );
    let words = ferroflow_engine::tokens::read_words(&run_dir.join("samples.txt")).unwrap();
    assert_eq!(words.len(), 40);
    for (word, row) in words.iter().zip(samples.rows()) {
        let tokens: Vec<u32> = row.iter().map(|&t| t as u32).collect();
        assert_eq!(word, &ferroflow_engine::tokens::decode_word(&tokens));
        assert!(
            word.len() <= 4 && word.bytes().all(|b| b.is_ascii_lowercase()),
            "{word:?}"
        );
    }
    let metrics = std::fs::read_to_string(run_dir.join("metrics.json")).unwrap();
    assert!(metrics.contains("final_loss"), "{metrics}");
    // The name is taken now.
    assert!(ferroflow_engine::run::train_new_discrete(&config, &mut [], None).is_err());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_samplers_step_coefficient_is_exact_for_the_mixture_path_and_tends_to_eulers() {
    use ferroflow_discrete::KappaSchedule;
    use ferroflow_engine::discrete::{SchedulerKappa, exact_step_coefficient};
    let kappa = SchedulerKappa(
        ferroflow_paths::SchedulerKind::Polynomial { exponent: 2.0 }
            .build()
            .unwrap(),
    );
    // The last step leaves nothing: h c = (1 - kappa_t) / (1 - kappa_t) = 1.
    for steps in [1usize, 3, 64] {
        let h = 1.0 / steps as f64;
        assert!((exact_step_coefficient(&kappa, 1.0 - h, h) * h - 1.0).abs() < 1e-12);
    }
    // From t = 0.5 over h = 0.1: (0.36 - 0.25) / 0.75 / 0.1.
    assert!((exact_step_coefficient(&kappa, 0.5, 0.1) - 0.11 / 0.75 / 0.1).abs() < 1e-12);
    // Small steps: Euler's kappa' / (1 - kappa).
    let euler = kappa.at(0.5).derivative / (1.0 - kappa.at(0.5).value);
    assert!((exact_step_coefficient(&kappa, 0.5, 1e-7) - euler).abs() < 1e-5);
}
