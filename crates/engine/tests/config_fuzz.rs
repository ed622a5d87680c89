//! Property tests of the config loader against hostile TOML: arbitrary text, valid configs with one value
//! replaced by anything, and arbitrary nested tables. The loader answers with a config or an error, never a
//! panic; an accepted config writes itself back out and reads back equal (the panic of issue 15, cause 5,
//! was a validated config that could not be written).

use std::path::Path;

use ferroflow_engine::RunConfig;
use proptest::prelude::*;

const VALID: &str = r#"[run]
name = "fuzz"
seed = 3
device = "cpu"
threads = 1

[data]
source = { kind = "gaussian", dim = 2, std = 1.0 }
target = { kind = "mixture", weights = [1.0, 2.0], means = [[0.0, 1.0], [2.0, 0.0]], covariances = [[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.1], [0.1, 0.5]]] }

[model]
width = 32
depth = 2
activation = "selu"
time_embedding = { kind = "fourier", n_freq = 4 }

[flow]
path = "affine"
sigma = 0.1
coupling = { kind = "sinkhorn" }
time_sampling = { kind = "logit_normal", mean = 0.0, std = 1.0 }

[train]
steps = 100
batch_size = 64
ema_decay = 0.99
checkpoint_every = 50
log_every = 10
optimizer = { lr = 0.001 }

[sample]
n_samples = 100
solver = "dopri5"
atol = 1e-5
rtol = 1e-5
w2_samples = 100
"#;

/// Values of every TOML type, the extremes and the malformed among them.
fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        Just("9223372036854775807".to_owned()),
        Just("-9223372036854775808".to_owned()),
        Just("0".to_owned()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        prop_oneof![
            Just("nan"),
            Just("inf"),
            Just("-inf"),
            Just("1e308"),
            Just("-0.0"),
            Just("5e-324")
        ]
        .prop_map(str::to_owned),
        "[a-z_0-9]{0,12}".prop_map(|s| format!("\"{s}\"")),
        Just("true".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("[[1.0, 2.0], [3.0]]".to_owned()),
        Just("{ kind = \"moons\", extra = 1 }".to_owned()),
        Just("{ kind = \"nope\" }".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        "[\\PC]{0,8}".prop_map(|s| s),
    ]
}

/// Parses and, when accepted, checks the write-out round trip.
fn check(text: &str) -> Result<(), TestCaseError> {
    if let Ok(config) = RunConfig::parse(text, Path::new("fuzz.toml")) {
        let written = config.to_toml().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again = RunConfig::parse(&written, Path::new("written.toml"))
            .map_err(|e| TestCaseError::fail(format!("{e}\n{written}")))?;
        prop_assert_eq!(again, config);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_text_is_an_error_or_a_config(text in "\\PC{0,400}") {
        check(&text)?;
    }

    #[test]
    fn one_value_of_a_valid_config_replaced_by_anything(line in 0usize..64, value in any_value()) {
        let lines: Vec<&str> = VALID.lines().collect();
        let line = line % lines.len();
        let mutated: String = lines
            .iter()
            .enumerate()
            .map(|(idx, text)| match text.split_once(" = ") {
                Some((key, _)) if idx == line => format!("{key} = {value}\n"),
                _ => format!("{text}\n"),
            })
            .collect();
        check(&mutated)?;
    }

    #[test]
    fn a_valid_config_with_bytes_cut_or_inserted(at in 0usize..2000, cut in 0usize..40, insert in "[\\PC]{0,6}") {
        let at = (at % VALID.len()).min(VALID.len());
        let at = (0..=at).rev().find(|i| VALID.is_char_boundary(*i)).unwrap_or(0);
        let end = (at + cut).min(VALID.len());
        let end = (end..=VALID.len()).find(|i| VALID.is_char_boundary(*i)).unwrap_or(VALID.len());
        let mutated = format!("{}{insert}{}", &VALID[..at], &VALID[end..]);
        check(&mutated)?;
    }

    #[test]
    fn extra_keys_anywhere_are_refused(line in 0usize..64, key in "[a-z]{1,8}") {
        let lines: Vec<&str> = VALID.lines().collect();
        let line = line % lines.len();
        // A new key after a table header or inside an inline table: never silently accepted.
        let mutated: String = lines
            .iter()
            .enumerate()
            .map(|(idx, text)| {
                if idx != line {
                    format!("{text}\n")
                } else if text.starts_with('[') {
                    format!("{text}\n{key}_zz = 1\n")
                } else if let Some(open) = text.find("{ ") {
                    format!("{}{{ {key}_zz = 1, {}\n", &text[..open], &text[open + 2..])
                } else {
                    format!("{text}\n")
                }
            })
            .collect();
        if mutated != VALID {
            prop_assert!(RunConfig::parse(&mutated, Path::new("fuzz.toml")).is_err(), "{}", mutated);
        }
    }
}

#[test]
fn the_base_config_of_the_fuzzing_is_valid() {
    RunConfig::parse(VALID, Path::new("valid.toml")).unwrap();
}
