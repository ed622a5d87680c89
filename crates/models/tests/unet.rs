//! The U-Net velocity network: shapes, documented parameter names, class conditioning and the null label,
//! gradient flow to every parameter (zero-initialised output first), double backward for guidance,
//! checkpoint round trips and config validation. Small nets and batches keep each test well under a second.

use std::collections::HashSet;

use ferroflow_models::checkpoint::save_tensors;
use ferroflow_models::optim::{FlatAdam, OptimizerConfig};
use ferroflow_models::unet::{Unet, UnetConfig};
use ferroflow_models::{ModelError, ParamStore, VelocityNet};
use tch::{Device, Kind, Tensor};

const CPU: (Kind, Device) = (Kind::Float, Device::Cpu);

/// A small net with every kind of block: three levels, attention at 14 and 7 (and in the middle), skip
/// convolutions where the channel count changes.
fn small_config(num_classes: Option<usize>) -> UnetConfig {
    UnetConfig {
        channels: 8,
        channel_mult: vec![1, 2, 2],
        num_res_blocks: 1,
        attention_at: vec![14, 7],
        groups: 4,
        time_embedding_dim: 16,
        num_classes,
    }
}

fn small_net(seed: i64, num_classes: Option<usize>) -> Unet {
    tch::manual_seed(seed);
    Unet::new(small_config(num_classes), Device::Cpu).unwrap()
}

fn index_of(params: &ParamStore, name: &str) -> usize {
    params
        .specs()
        .iter()
        .position(|s| s.name == name)
        .unwrap_or_else(|| panic!("no parameter `{name}`"))
}

/// Gives the zero-initialised output convolution random weights, so that the output depends on the input.
fn randomise_output(net: &Unet) {
    let views = net.params().views();
    let _guard = tch::no_grad_guard();
    for name in ["out_conv.weight", "out_conv.bias"] {
        let mut view = views[index_of(net.params(), name)].shallow_clone();
        view.copy_(&(Tensor::randn(view.size(), CPU) * 0.1));
    }
}

#[test]
fn output_has_the_input_shape_and_starts_at_zero() {
    let net = small_net(0, None);
    let x = Tensor::randn([3, 1, 28, 28], CPU);
    let t = Tensor::rand([3], CPU);
    let v = net.forward(&x, &t);
    assert_eq!(v.size(), vec![3, 1, 28, 28]);
    assert_eq!(net.sample_shape(), vec![1, 28, 28]);
    assert_eq!(net.num_classes(), None);
    // The zero-initialised output convolution makes the untrained net predict exactly zero.
    assert_eq!(v.abs().max().double_value(&[]), 0.0);

    randomise_output(&net);
    let v = net.forward(&x, &t);
    assert_eq!(v.size(), vec![3, 1, 28, 28]);
    assert!(v.abs().max().double_value(&[]) > 0.0);
    assert!(v.isfinite().all().int64_value(&[]) != 0);
    // One time for the whole batch is broadcast, as samplers pass it.
    let by_scalar = net.forward(&x, &Tensor::from_slice(&[0.3f32]));
    let by_batch = net.forward(&x, &Tensor::full([3], 0.3, CPU));
    assert!(by_scalar.allclose(&by_batch, 1e-6, 1e-6, false));
    // The time matters.
    let later = net.forward(&x, &Tensor::full([3], 0.9, CPU));
    assert!((later - &by_batch).abs().max().double_value(&[]) > 1e-4);
    // Samples do not interact (no batch statistics): one sample alone gives the same output.
    let alone = net.forward(&x.narrow(0, 1, 1), &Tensor::full([1], 0.3, CPU));
    assert!(alone.allclose(&by_batch.narrow(0, 1, 1), 1e-5, 1e-5, false));
}

#[test]
fn default_config_builds_and_runs() {
    tch::manual_seed(0);
    let config = UnetConfig::default();
    assert_eq!(config.channels, 32);
    assert_eq!(config.channel_mult, vec![1, 2, 2]);
    assert_eq!(config.attention_at, vec![7]);
    assert_eq!(config.num_res_blocks, 1);
    let net = Unet::new(config, Device::Cpu).unwrap();
    let x = Tensor::randn([1, 1, 28, 28], CPU);
    assert_eq!(
        net.forward(&x, &Tensor::from_slice(&[0.5f32])).size(),
        vec![1, 1, 28, 28]
    );
    let params = net.params();
    // Attention only at 7x7: in the middle and at level 2, not at levels 0 and 1.
    let names: Vec<&str> = params.specs().iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"mid.attn.qkv.weight"));
    assert!(names.contains(&"down.2.attns.0.proj.weight"));
    assert!(names.contains(&"up.2.attns.1.norm.weight"));
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("down.1.attns") || n.starts_with("up.0.attns"))
    );
    // No downsampling after the last level, no upsampling before the first.
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("down.2.downsample") || n.starts_with("up.0.upsample"))
    );
    assert!(
        params.numel() > 500_000 && params.numel() < 5_000_000,
        "{}",
        params.numel()
    );
}

/// The documented pattern of a parameter name: `(prefix with levels and blocks generalised, leaf)`.
fn documented_pattern(name: &str) -> (String, &str) {
    let (prefix, leaf) = name.rsplit_once('.').unwrap();
    let parts: Vec<&str> = prefix.split('.').collect();
    let generic = match parts.as_slice() {
        ["down" | "up", _, "blocks", _, rest @ ..] => format!("{{block}}.{}", rest.join(".")),
        ["mid", "block1" | "block2", rest @ ..] => format!("{{block}}.{}", rest.join(".")),
        ["down" | "up", _, "attns", _, rest @ ..] => format!("{{attn}}.{}", rest.join(".")),
        ["mid", "attn", rest @ ..] => format!("{{attn}}.{}", rest.join(".")),
        [side @ ("down" | "up"), _, rest @ ..] => format!("{side}.{{l}}.{}", rest.join(".")),
        _ => prefix.to_owned(),
    };
    (generic, leaf)
}

#[test]
fn parameter_names_are_unique_and_documented() {
    let source = include_str!("../src/unet.rs");
    let doc_table: Vec<&str> = source
        .lines()
        .take_while(|line| line.starts_with("//!"))
        .filter(|line| line.starts_with("//! | `"))
        .collect();
    for num_classes in [None, Some(10)] {
        let net = small_net(0, num_classes);
        let specs = net.params().specs();
        let unique: HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(unique.len(), specs.len(), "duplicate parameter names");
        for spec in specs {
            let (generic, leaf) = documented_pattern(&spec.name);
            let row = doc_table
                .iter()
                .find(|row| row.contains(&format!("`{generic}.weight`")))
                .unwrap_or_else(|| panic!("`{}` ({generic}) is not in the module docs", spec.name));
            if leaf == "bias" {
                assert!(row.contains("`.bias`"), "`{}`: its row lacks the bias", spec.name);
            } else {
                assert_eq!(leaf, "weight", "{}", spec.name);
            }
        }
    }
    // A few shapes against the table.
    let net = small_net(0, Some(10));
    let shape_of = |name: &str| net.params().specs()[index_of(net.params(), name)].shape.clone();
    assert_eq!(shape_of("label_embed.weight"), vec![11, 16]);
    assert_eq!(shape_of("time_embed.0.weight"), vec![16, 8]);
    assert_eq!(shape_of("input_conv.weight"), vec![8, 1, 3, 3]);
    assert_eq!(shape_of("down.1.blocks.0.skip.weight"), vec![16, 8, 1, 1]);
    assert_eq!(shape_of("down.1.blocks.0.emb_proj.weight"), vec![32, 16]);
    assert_eq!(shape_of("down.1.attns.0.qkv.weight"), vec![48, 16, 1, 1]);
    // The first block on the way up at level 2 takes h (16) and the level-2 block's output (16).
    assert_eq!(shape_of("up.2.blocks.0.conv1.weight"), vec![16, 32, 3, 3]);
    // The last block on the way up at level 0 takes h (8) and the input convolution's output (8).
    assert_eq!(shape_of("up.0.blocks.1.norm1.weight"), vec![16]);
    assert_eq!(shape_of("out_conv.weight"), vec![1, 8, 3, 3]);
}

#[test]
fn labels_condition_the_output_and_none_is_the_null_class() {
    let net = small_net(3, Some(4));
    assert_eq!(net.num_classes(), Some(4));
    randomise_output(&net);
    let x = Tensor::randn([3, 1, 28, 28], CPU);
    let t = Tensor::rand([3], CPU);
    let params = net.params().views();
    let with = |labels: &[i64]| net.forward_with(&params, &x, &t, Some(&Tensor::from_slice(labels)));
    let zeros = with(&[0, 0, 0]);
    let mixed = with(&[0, 1, 2]);
    let diff = (&mixed - &zeros).abs().amax([1, 2, 3], false);
    let diff: Vec<f64> = Vec::try_from(diff.to_kind(Kind::Double)).unwrap();
    assert_eq!(diff[0], 0.0, "same label, same output");
    assert!(diff[1] > 1e-4 && diff[2] > 1e-4, "labels are ignored: {diff:?}");

    let null = with(&[4, 4, 4]);
    let unlabelled = net.forward_with(&params, &x, &t, None);
    assert!(
        unlabelled.equal(&null),
        "`None` must mean the null class (label 4)"
    );
    assert!(net.forward(&x, &t).equal(&null));
    assert!((&null - &zeros).abs().max().double_value(&[]) > 1e-4);
    // One label for the whole batch is broadcast.
    assert!(
        net.forward_with(&params, &x, &t, Some(&Tensor::from_slice(&[2i64])))
            .equal(&with(&[2, 2, 2]))
    );

    // An unconditional net ignores labels.
    let plain = small_net(3, None);
    randomise_output(&plain);
    let plain_params = plain.params().views();
    let a = plain.forward_with(&plain_params, &x, &t, Some(&Tensor::from_slice(&[0i64, 1, 2])));
    assert!(a.equal(&plain.forward(&x, &t)));
}

/// One flow-matching step (linear path, independent coupling) on a random batch.
fn train_step(net: &Unet, adam: &mut FlatAdam, labels: &Tensor) -> f64 {
    let x1 = Tensor::randn([4, 1, 28, 28], CPU);
    let x0 = Tensor::randn([4, 1, 28, 28], CPU);
    let t = Tensor::rand([4], CPU);
    let tb = t.reshape([-1, 1, 1, 1]);
    let xt = &x0 * (1.0 - &tb) + &x1 * &tb;
    let target = &x1 - &x0;
    let v = net.forward_with(&net.params().views(), &xt, &t, Some(labels));
    let loss = (v - target).square().mean(Kind::Float);
    loss.backward();
    adam.step(net.params().flat());
    loss.double_value(&[])
}

/// Largest change of each parameter between two copies of the flat tensor.
fn changes(params: &ParamStore, before: &Tensor, after: &Tensor) -> Vec<(String, f64)> {
    params
        .specs()
        .iter()
        .zip(params.views_of(before).iter().zip(params.views_of(after)))
        .map(|(spec, (b, a))| (spec.name.clone(), (a - b).abs().max().double_value(&[])))
        .collect()
}

#[test]
fn every_parameter_learns_from_the_second_step_on() {
    // Labels cover every row of the embedding table (3 classes and the null class 3).
    let net = small_net(5, Some(3));
    let labels = Tensor::from_slice(&[0i64, 1, 2, 3]);
    let mut adam = FlatAdam::new(OptimizerConfig::default(), net.params().flat()).unwrap();
    let start = net.params().flat().detach().copy();

    let loss = train_step(&net, &mut adam, &labels);
    assert!(loss.is_finite());
    let after_one = net.params().flat().detach().copy();
    for (name, change) in changes(net.params(), &start, &after_one) {
        if name.starts_with("out_conv.") {
            assert!(change > 0.0, "`{name}` did not move in step 1");
        } else {
            // Behind a zero output convolution nothing else gets a gradient yet.
            assert_eq!(
                change, 0.0,
                "`{name}` moved in step 1 behind the zero output conv"
            );
        }
    }

    train_step(&net, &mut adam, &labels);
    let after_two = net.params().flat().detach().copy();
    for (name, change) in changes(net.params(), &after_one, &after_two) {
        assert!(change > 0.0, "`{name}` received no gradient in step 2");
    }
}

#[test]
fn double_backward_through_the_net_works() {
    // Mode-seeking guidance differentiates a Hutchinson divergence estimate e^T J_v e with respect to x.
    let net = small_net(7, None);
    randomise_output(&net);
    let x = Tensor::randn([2, 1, 28, 28], CPU).set_requires_grad(true);
    let t = Tensor::rand([2], CPU);
    let probe = Tensor::randn([2, 1, 28, 28], CPU);
    let v = net.forward(&x, &t);
    let vjp = Tensor::run_backward(&[(&v * &probe).sum(Kind::Float)], &[&x], true, true).remove(0);
    let divergence = (vjp * &probe).sum(Kind::Float);
    assert!(divergence.requires_grad());
    let grad = Tensor::run_backward(&[divergence], &[&x], false, false).remove(0);
    assert_eq!(grad.size(), vec![2, 1, 28, 28]);
    assert!(grad.isfinite().all().int64_value(&[]) != 0);
    assert!(grad.abs().max().double_value(&[]) > 0.0);
}

#[test]
fn checkpoint_round_trip_is_exact() {
    let dir = std::env::temp_dir().join(format!("ferroflow-unet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("unet.safetensors");
    let net = small_net(11, Some(10));
    randomise_output(&net);
    save_tensors(&net.params().named_of(net.params().flat()), &path).unwrap();

    let other = small_net(12, Some(10));
    assert!(!other.params().flat().equal(net.params().flat()));
    other.params().load(&path).unwrap();
    assert!(other.params().flat().equal(net.params().flat()));
    let x = Tensor::randn([2, 1, 28, 28], CPU);
    let t = Tensor::rand([2], CPU);
    assert!(other.forward(&x, &t).equal(&net.forward(&x, &t)));

    // A net of another shape refuses the checkpoint, naming a parameter.
    let unconditional = small_net(12, None);
    match unconditional.params().load(&path) {
        Err(ModelError::CheckpointMismatch { detail, .. }) => {
            assert!(detail.contains("label_embed.weight"), "{detail}")
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalid_configs_name_their_key() {
    let cases: Vec<(UnetConfig, &str)> = vec![
        (
            UnetConfig {
                groups: 3,
                ..small_config(None)
            },
            "channels",
        ),
        (
            UnetConfig {
                channels: 7,
                groups: 1,
                ..small_config(None)
            },
            "channels",
        ),
        (
            UnetConfig {
                groups: 0,
                ..small_config(None)
            },
            "groups",
        ),
        (
            UnetConfig {
                channel_mult: vec![],
                ..small_config(None)
            },
            "channel_mult",
        ),
        (
            UnetConfig {
                channel_mult: vec![1, 2, 2, 2],
                ..small_config(None)
            },
            "channel_mult",
        ),
        (
            UnetConfig {
                channel_mult: vec![1, 0],
                attention_at: vec![],
                ..small_config(None)
            },
            "channel_mult",
        ),
        (
            UnetConfig {
                num_res_blocks: 0,
                ..small_config(None)
            },
            "num_res_blocks",
        ),
        // Two levels run at 28 and 14 only.
        (
            UnetConfig {
                channel_mult: vec![1, 2],
                attention_at: vec![7],
                ..small_config(None)
            },
            "attention_at",
        ),
        (
            UnetConfig {
                attention_at: vec![5],
                ..small_config(None)
            },
            "attention_at",
        ),
        (
            UnetConfig {
                time_embedding_dim: 0,
                ..small_config(None)
            },
            "time_embedding_dim",
        ),
        (
            UnetConfig {
                num_classes: Some(0),
                ..small_config(None)
            },
            "num_classes",
        ),
    ];
    for (config, expected) in cases {
        match Unet::new(config.clone(), Device::Cpu) {
            Err(ModelError::InvalidConfig { key, .. }) => assert_eq!(key, expected, "{config:?}"),
            other => panic!("{config:?} should be refused as `{expected}`, got {other:?}"),
        }
    }
    let one_level = UnetConfig {
        channel_mult: vec![2],
        attention_at: vec![28],
        ..small_config(None)
    };
    let net = Unet::new(one_level, Device::Cpu).unwrap();
    let x = Tensor::randn([2, 1, 28, 28], CPU);
    assert_eq!(
        net.forward(&x, &Tensor::rand([2], CPU)).size(),
        vec![2, 1, 28, 28]
    );
}

#[test]
fn check_inputs_reports_bad_shapes_and_labels() {
    let net = small_net(0, Some(10));
    let x = Tensor::randn([3, 1, 28, 28], CPU);
    let t = Tensor::rand([3], CPU);
    net.check_inputs(&x, &t, None).unwrap();
    net.check_inputs(&x, &t, Some(&Tensor::from_slice(&[0i64, 9, 10])))
        .unwrap();
    let bad = |result: Result<(), ModelError>, expected: &str| match result {
        Err(ModelError::Shape { name, .. }) => assert_eq!(name, expected),
        other => panic!("expected a shape error for `{expected}`, got {other:?}"),
    };
    bad(
        net.check_inputs(&Tensor::randn([3, 1, 32, 32], CPU), &t, None),
        "x",
    );
    bad(net.check_inputs(&Tensor::randn([3, 784], CPU), &t, None), "x");
    bad(net.check_inputs(&x, &Tensor::rand([2], CPU), None), "t");
    bad(
        net.check_inputs(&x, &t, Some(&Tensor::from_slice(&[0i64, 1]))),
        "labels",
    );
    bad(
        net.check_inputs(&x, &t, Some(&Tensor::from_slice(&[0i64, 11, 1]))),
        "labels",
    );
    bad(
        net.check_inputs(&x, &t, Some(&Tensor::from_slice(&[-1i64, 1, 1]))),
        "labels",
    );
}
