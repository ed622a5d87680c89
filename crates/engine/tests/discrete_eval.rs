//! Sampling and evaluating trained discrete runs: a tiny model trained on a 9-state distribution samples it
//! within a chi-square test; the tensor ELBO estimate of `eval` agrees with the math crate's exact-expectation
//! ELBO for the same network; guidance on tensors equals the math crate's; a length-conditional words run puts
//! more samples at the requested length as the guidance weight grows; `eval` writes its figures.

use std::path::{Path, PathBuf};

use ferroflow_discrete::{KappaSchedule, Token};
use ferroflow_engine::RunConfig;
use ferroflow_engine::discrete::{
    TokenGuidance, TokenSampling, TrainedTokens, eval, guided_log_posterior, path_and_kappa,
};
use ferroflow_engine::stream::Stream;
use ferroflow_models::discrete::carry_over;
use ndarray::{Array2, Array3, ArrayView2};
use tch::{Kind, Tensor};

static TORCH_SEED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroflow-discrete-eval-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Trains the run described by `target` and `extra` for `steps` steps in `root` and loads it.
fn trained(root: &Path, target: &str, steps: usize, extra: &str) -> (PathBuf, TrainedTokens) {
    let text = format!(
        "[run]\nname = \"r\"\nout_dir = \"{}\"\nseed = 3\n[data]\ntarget = {target}\n[model]\nkind = \
         \"token_mlp\"\n[model.token_mlp]\nembedding_dim = 8\nwidth = 64\ndepth = 2\n[train]\nsteps = {steps}\n\
         batch_size = 256\ncheckpoint_every = 0\nlog_every = 50\nema_decay = 0.99\n[train.optimizer]\nkind = \"adam\"\nlr = 3e-3\n\
         {extra}",
        root.display()
    );
    let config = RunConfig::parse(&text, Path::new("test.toml")).unwrap();
    let _serial = TORCH_SEED.lock().unwrap_or_else(|e| e.into_inner());
    let run_dir = ferroflow_engine::run::train_new_discrete(&config, &mut [], None).unwrap();
    let tokens = TrainedTokens::load(&run_dir).unwrap();
    (run_dir, tokens)
}

/// The 3 x 3 bins of the checkerboard over [-3, 3]^2: 9 token pairs with unequal probabilities.
const NINE_STATES: &str = "{ kind = \"tokens_2d\", dataset = \"checkerboard\", bins = 3, half_width = 3.0 }";

/// The probability of each of the 9 pairs, from 400,000 data points (standard error below 0.001).
fn nine_state_probabilities(config: &RunConfig) -> [f64; 9] {
    let data = ferroflow_engine::discrete::TokenData::load(config).unwrap();
    let tokens = data.sample(400_000, &mut Stream::Benchmark.rng(99));
    let mut counts = [0.0; 9];
    for row in tokens.rows() {
        counts[(row[0] * 3 + row[1]) as usize] += 1.0;
    }
    counts.map(|c| c / 400_000.0)
}

#[test]
fn a_trained_tiny_model_samples_its_nine_state_data_within_a_chi_square_test() {
    let root = scratch("chi");
    let (run_dir, tokens) = trained(&root, NINE_STATES, 4000, "");
    let probabilities = nine_state_probabilities(&tokens.config);
    let n = 3000;
    // Every sampler: the network's own rates, the carry-over of revealed tokens, and the corrector (which
    // leaves the marginals of the exact posterior unchanged).
    let corrector = ferroflow_discrete::Corrector::Power {
        scale: 1.0,
        t_exponent: 1.0,
        one_minus_t_exponent: 1.0,
    };
    for (carry_over, corrector) in [
        (false, ferroflow_discrete::Corrector::Off),
        (true, ferroflow_discrete::Corrector::Off),
        (false, corrector),
    ] {
        let sampling = TokenSampling {
            steps: 64,
            temperature: 1.0,
            guidance: None,
            carry_over,
            corrector,
        };
        let samples = tokens.sample(n, &sampling, &mut Stream::Sample.rng(1)).unwrap();
        let mut counts = [0.0; 9];
        for row in samples.rows() {
            counts[(row[0] * 3 + row[1]) as usize] += 1.0;
        }
        let chi_square: f64 = counts
            .iter()
            .zip(probabilities)
            .filter(|(_, p)| *p > 0.0)
            .map(|(observed, p)| (observed - n as f64 * p).powi(2) / (n as f64 * p))
            .sum();
        // The 0.999 quantile of chi-square with 8 degrees of freedom is 26.12.
        assert!(
            chi_square < 26.12,
            "carry-over {carry_over}, {corrector:?}: chi-square {chi_square}: counts {counts:?} against {probabilities:?}"
        );
    }
    // And not by luck of a flat model: the data is far from uniform.
    assert!(probabilities.iter().any(|&p| p > 0.2) && probabilities.iter().any(|&p| p < 0.05));
    // The held-out ELBO bounds the cross-entropy E_data[-log2 p_model] >= H(data) from above: six pairs of
    // probability 1/8 and one of 1/4 give H = 2.75 bits, 1.375 per token. Trained, it comes close.
    let data = ferroflow_engine::discrete::TokenData::load(&tokens.config).unwrap();
    let x1 = data.sample(4000, &mut Stream::EvalTarget.rng(5));
    let elbo = tokens.elbo(x1.view(), &mut Stream::EvalHeldOut.rng(5)).unwrap();
    assert!(
        elbo.bits_per_token > 1.375 - 4.0 * elbo.stderr && elbo.bits_per_token < 1.375 + 0.05,
        "ELBO {} ± {} bits per token against the entropy 1.375",
        elbo.bits_per_token,
        elbo.stderr
    );
    drop(run_dir);
    std::fs::remove_dir_all(&root).unwrap();
}

/// The network's posterior (carry-over applied) on the math crate's arrays: `[n, length, n_states]`.
fn posterior_arrays(tokens: &TrainedTokens, states: ArrayView2<Token>, t: f64) -> Array3<f64> {
    let (n, length) = states.dim();
    let flat: Vec<i64> = states.iter().map(|&s| i64::from(s)).collect();
    let x_t = Tensor::from_slice(&flat).view([n as i64, length as i64]);
    let times = Tensor::full([n as i64], t, (Kind::Float, tch::Device::Cpu));
    let logits = tokens
        .net
        .forward_with(&tokens.net.params().views(), &x_t, &times, None);
    let logits = carry_over(&logits.to_kind(Kind::Double), &x_t, tokens.net.source());
    let probs = ferroflow_engine::discrete::posterior_from_logits(&logits, 1.0, tokens.path.n_states());
    let values = Vec::<f64>::try_from(probs.reshape([-1])).unwrap();
    Array3::from_shape_vec((n, length, tokens.path.n_states()), values).unwrap()
}

#[test]
fn the_tensor_elbo_estimate_agrees_with_the_exact_expectation_elbo_of_the_same_network() {
    let root = scratch("elbo");
    let (_, tokens) = trained(&root, NINE_STATES, 300, "");
    let (path, kappa) = path_and_kappa(&tokens.config).unwrap();
    // Every one of the 9 sequences, each repeated so that the Monte Carlo estimate is tight.
    let distinct = Array2::from_shape_fn((9, 2), |(row, col)| {
        if col == 0 {
            row as Token / 3
        } else {
            row as Token % 3
        }
    });
    let grid = ferroflow_discrete::uniform_grid(ferroflow_engine::discrete::trained::ELBO_INTERVALS).unwrap();
    let exact: Vec<f64> = distinct
        .rows()
        .into_iter()
        .map(|x1| {
            ferroflow_discrete::elbo(&path, &kappa, x1, &grid, 100, |states, t| {
                Ok::<_, ferroflow_discrete::DiscreteError>(posterior_arrays(&tokens, states, t))
            })
            .unwrap()
            .bits_per_token
        })
        .collect();
    let repeats = 400;
    let replicated = Array2::from_shape_fn((9 * repeats, 2), |(row, col)| distinct[[row % 9, col]]);
    let estimate = tokens
        .elbo(replicated.view(), &mut Stream::EvalHeldOut.rng(4))
        .unwrap();
    let expected = exact.iter().sum::<f64>() / 9.0;
    assert!(
        (estimate.bits_per_token - expected).abs() < 4.0 * estimate.stderr + 1e-3,
        "estimate {} ± {} against the exact expectation {expected} (per sequence {exact:?})",
        estimate.bits_per_token,
        estimate.stderr
    );
    // A bound on the NLL of a distribution over 9 pairs: an untrained-ish model pays at least the entropy.
    assert!(expected > 0.0 && estimate.stderr > 0.0);
    // kappa_t = t (the default cond_ot scheduler), whose rate 1 / (1 - t) the quadrature integrates.
    assert_eq!(kappa.at(0.5).value, 0.5);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn guided_posteriors_on_tensors_equal_the_math_crates() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let shape = (4, 3, 5);
    let cond = Array3::from_shape_fn(shape, |_| rng.random_range(-3.0..3.0));
    let uncond = Array3::from_shape_fn(shape, |_| rng.random_range(-3.0..3.0));
    let tensor = |a: &Array3<f64>| Tensor::from_slice(a.as_slice().unwrap()).view([4, 3, 5]);
    for weight in [0.0, 0.5, 2.0, -0.5] {
        let expected =
            ferroflow_discrete::classifier_free_guidance(cond.view(), uncond.view(), weight).unwrap();
        let got = guided_log_posterior(&tensor(&cond), &tensor(&uncond), weight);
        let got = Vec::<f64>::try_from(got.reshape([-1])).unwrap();
        for (a, b) in got.iter().zip(expected.iter()) {
            assert!((a - b).abs() < 1e-12, "w = {weight}: {a} vs {b}");
        }
    }
}

#[test]
fn a_length_conditional_words_run_follows_its_class_more_as_guidance_grows_and_eval_writes_its_figures() {
    let root = scratch("cfg");
    let file = root.join("words.txt");
    // Two-letter and four-letter words only: the lengths a model must learn from the label.
    std::fs::write(
        &file,
        "ab\nba\ncd\ndc\nac\nca\nbd\ndb\nabcd\nbadc\ncdab\ndcba\nacbd\nbdac\ncadb\ndbca\nadbc\nbcad\n",
    )
    .unwrap();
    let target = format!(
        "{{ kind = \"words\", file = \"{}\", max_length = 4, held_out = 0.2 }}",
        file.display()
    );
    let (run_dir, tokens) = trained(
        &root,
        &target,
        600,
        "[flow]\ndiscrete = { condition = \"length\" }\n[sample]\nsteps = 16\nw2_samples = 400\n",
    );
    assert_eq!(tokens.net.num_classes(), Some(4));
    let on_length = |class: usize, weight: f64| {
        let sampling = TokenSampling {
            steps: 16,
            temperature: 1.0,
            guidance: Some(TokenGuidance { class, weight }),
            carry_over: false,
            corrector: ferroflow_discrete::Corrector::Off,
        };
        let samples = tokens.sample(400, &sampling, &mut Stream::Sample.rng(2)).unwrap();
        eval::words_of(samples.view())
            .iter()
            .filter(|w| w.len() == class + 1)
            .count() as f64
            / 400.0
    };
    for class in [1, 3] {
        let (plain, guided) = (on_length(class, 0.0), on_length(class, 3.0));
        assert!(
            plain > 0.6,
            "class {class}: {plain} of the conditional samples have the length"
        );
        assert!(
            guided >= plain,
            "class {class}: guidance lowered the share from {plain} to {guided}"
        );
    }
    // A class the network does not know, and an unconditional request for a class, are refused by name.
    let bad = TokenSampling {
        steps: 4,
        temperature: 1.0,
        guidance: Some(TokenGuidance {
            class: 4,
            weight: 1.0,
        }),
        carry_over: false,
        corrector: ferroflow_discrete::Corrector::Off,
    };
    let err = tokens
        .sample(2, &bad, &mut Stream::Sample.rng(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("class 4") && err.contains("4 classes"), "{err}");
    drop(tokens);
    let metrics = eval::evaluate(&run_dir).unwrap();
    let words = metrics.words.expect("word figures");
    assert!((0.0..=1.0).contains(&words.real) && words.novel <= words.real);
    let guidance = metrics.token_guidance.expect("guidance figures");
    assert_eq!(guidance.len(), eval::GUIDANCE_WEIGHTS.len());
    // Averaged over the four classes, two of which (lengths 1 and 3) no training word has: at most 1/2.
    assert!(
        guidance[0].on_class > 0.4 && guidance[0].on_class <= 0.5,
        "{guidance:?}"
    );
    let bits = metrics.elbo_bits_per_token.unwrap();
    // The held-out words were never trained on, but every letter and length was: a finite bound, above 0.
    assert!(bits.is_finite() && bits > 0.0, "{bits}");
    std::fs::remove_dir_all(&root).unwrap();
}
