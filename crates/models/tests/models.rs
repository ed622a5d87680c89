//! Known answers for the MLP, the flat-parameter optimizer, the EMA and checkpoints.

use ferroflow_models::optim::{Ema, FlatAdam, OptimizerConfig, OptimizerKind};
use ferroflow_models::{Mlp, MlpConfig, ModelError, TimeEmbedding, VelocityNet};
use tch::{Device, Kind, Tensor};

fn mlp(seed: i64) -> Mlp {
    tch::manual_seed(seed);
    Mlp::new(MlpConfig::benchmark(2), Device::Cpu).unwrap()
}

#[test]
fn mlp_has_torchcfm_names_and_shapes() {
    let net = mlp(0);
    let names: Vec<(String, Vec<i64>)> = net
        .params()
        .specs()
        .iter()
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect();
    assert_eq!(names[0], ("net.0.weight".to_owned(), vec![64, 3]));
    assert_eq!(names[6], ("net.6.weight".to_owned(), vec![2, 64]));
    assert_eq!(names.len(), 8);
    assert_eq!(
        net.params().numel(),
        3 * 64 + 64 + 2 * (64 * 64 + 64) + 64 * 2 + 2
    );
    let x = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
    let t = Tensor::rand([5], (Kind::Float, Device::Cpu));
    assert_eq!(net.forward(&x, &t).size(), vec![5, 2]);
    // A scalar time is broadcast over the batch.
    let one_t = Tensor::from_slice(&[0.3f32]);
    let by_scalar = net.forward(&x, &one_t);
    let by_batch = net.forward(&x, &Tensor::full([5], 0.3, (Kind::Float, Device::Cpu)));
    assert!(by_scalar.allclose(&by_batch, 1e-6, 1e-6, false));
}

#[test]
fn fourier_embedding_changes_the_input_width() {
    tch::manual_seed(0);
    let cfg = MlpConfig {
        time_embedding: TimeEmbedding::Fourier { n_freq: 4 },
        ..MlpConfig::benchmark(3)
    };
    let net = Mlp::new(cfg, Device::Cpu).unwrap();
    assert_eq!(net.params().specs()[0].shape, vec![64, 3 + 8]);
    let bad = MlpConfig {
        width: 0,
        ..MlpConfig::benchmark(2)
    };
    assert!(matches!(
        Mlp::new(bad, Device::Cpu),
        Err(ModelError::InvalidConfig { key: "width", .. })
    ));
}

#[test]
fn angle_columns_make_the_network_periodic_in_them() {
    tch::manual_seed(0);
    let cfg = MlpConfig {
        angle_columns: vec![1],
        ..MlpConfig::benchmark(2)
    };
    let net = Mlp::new(cfg, Device::Cpu).unwrap();
    // x, cos(theta), sin(theta), t.
    assert_eq!(net.params().specs()[0].shape, vec![64, 4]);
    let pi = std::f32::consts::PI;
    let at = |x: f32, theta: f32| {
        let point = Tensor::from_slice(&[x, theta]).view([1, 2]);
        net.forward_with(
            &net.params().views(),
            &point,
            &Tensor::from_slice(&[0.4f32]),
            None,
        )
    };
    // The same point written with angles 2 pi apart, and the two sides of the seam at -pi = pi.
    let diff = |a: Tensor, b: Tensor| (a - b).abs().max().double_value(&[]);
    assert!(diff(at(0.3, 1.0), at(0.3, 1.0 + 2.0 * pi)) < 1e-5);
    assert!(diff(at(0.3, pi - 1e-4), at(0.3, -pi + 1e-4)) < 1e-3);
    // The plain column is not periodic.
    assert!(diff(at(0.3, 1.0), at(0.3 + 2.0 * pi, 1.0)) > 1e-3);
    for (columns, detail) in [
        (vec![2], "outside the 2 columns"),
        (vec![1, 1], "not strictly increasing"),
    ] {
        let bad = MlpConfig {
            angle_columns: columns,
            ..MlpConfig::benchmark(2)
        };
        match Mlp::new(bad, Device::Cpu) {
            Err(ModelError::InvalidConfig {
                key: "angle_columns",
                detail: d,
            }) => {
                assert!(d.contains(detail), "{d}")
            }
            other => panic!("expected an angle_columns error, got {other:?}"),
        }
    }
}

#[test]
fn a_class_conditional_mlp_reads_its_label_and_none_is_the_null_class() {
    tch::manual_seed(0);
    let plain = Mlp::new(MlpConfig::benchmark(2), Device::Cpu).unwrap();
    let cfg = MlpConfig {
        num_classes: Some(3),
        ..MlpConfig::benchmark(2)
    };
    let net = Mlp::new(cfg, Device::Cpu).unwrap();
    assert_eq!(net.num_classes(), Some(3));
    let specs = net.params().specs();
    // The label embedding widens the first layer's input and comes after the layers.
    assert_eq!(specs[0].shape, vec![64, 2 + 1 + 8]);
    assert_eq!(specs.last().unwrap().name, "label_embed.weight");
    assert_eq!(specs.last().unwrap().shape, vec![4, 8]);
    let names = |n: &Mlp| {
        n.params()
            .specs()
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&net)[..names(&plain).len()], names(&plain)[..]);
    let x = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[0.3f32]);
    let params = net.params().views();
    let at = |labels: Option<&Tensor>| net.forward_with(&params, &x, &t, labels);
    let diff = |a: Tensor, b: Tensor| (a - b).abs().max().double_value(&[]);
    let label = |c: i64| Tensor::full([5], c, (Kind::Int64, Device::Cpu));
    assert_eq!(diff(at(None), at(Some(&label(3)))), 0.0);
    assert!(diff(at(Some(&label(0))), at(Some(&label(1)))) > 1e-4);
    // One label is broadcast over the batch.
    assert_eq!(
        diff(at(Some(&Tensor::from_slice(&[1i64]))), at(Some(&label(1)))),
        0.0
    );
    // The fused kernel and the forward-mode divergence take no labels, so they decline.
    assert!(net.cpu_kernel(&params).is_none());
    assert!(net.divergence_forward(&params, &x, &t, None, i64::MAX).is_none());
    let bad = MlpConfig {
        num_classes: Some(0),
        ..MlpConfig::benchmark(2)
    };
    assert!(matches!(
        Mlp::new(bad, Device::Cpu),
        Err(ModelError::InvalidConfig {
            key: "num_classes",
            ..
        })
    ));
}

#[test]
fn first_adam_step_moves_by_lr_times_sign() {
    // After one step from zero moments, m_hat = g and v_hat = g^2: the update is lr g / (|g| + eps).
    let net = mlp(1);
    let flat = net.params().flat();
    let before = flat.detach().copy();
    let coef = Tensor::randn(flat.size(), (Kind::Float, Device::Cpu));
    (flat * &coef).sum(Kind::Float).backward();
    let cfg = OptimizerConfig {
        lr: 0.01,
        ..OptimizerConfig::default()
    };
    let mut adam = FlatAdam::new(cfg, flat).unwrap();
    adam.step(flat);
    let expected = &before - coef.sign() * 0.01;
    let diff = (flat - &expected).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "max deviation {diff}");
    // The gradient is cleared for the next step.
    assert_eq!(flat.grad().abs().max().double_value(&[]), 0.0);
}

#[test]
fn adamw_decays_weights_without_gradient_signal() {
    let net = mlp(2);
    let flat = net.params().flat();
    let before = flat.detach().copy();
    (flat * 0.0).sum(Kind::Float).backward();
    let cfg = OptimizerConfig {
        kind: OptimizerKind::AdamW,
        lr: 0.1,
        weight_decay: 0.5,
        ..OptimizerConfig::default()
    };
    let mut adam = FlatAdam::new(cfg, flat).unwrap();
    adam.step(flat);
    assert!(flat.allclose(&(&before * 0.95), 1e-6, 1e-7, false));
}

#[test]
fn gradient_clipping_bounds_the_step() {
    // With clipping to 1e-3 the first Adam step is unchanged (Adam is scale free) but the moments shrink.
    let net = mlp(3);
    let flat = net.params().flat();
    (flat * 1000.0).sum(Kind::Float).backward();
    let cfg = OptimizerConfig {
        grad_clip: 1e-3,
        ..OptimizerConfig::default()
    };
    let mut adam = FlatAdam::new(cfg, flat).unwrap();
    adam.step(flat);
    let norm = (adam.exp_avg.norm().double_value(&[]) / 0.1 - 1e-3).abs();
    assert!(norm < 1e-6, "first moment norm after clipping off by {norm}");
}

#[test]
fn ema_follows_its_formula() {
    let net = mlp(4);
    let flat = net.params().flat();
    let mut ema = Ema::new(0.9, flat).unwrap();
    let start = flat.detach().copy();
    tch::no_grad(|| {
        let mut f = flat.shallow_clone();
        let _ = f.g_add_scalar_(1.0);
    });
    ema.update(flat);
    assert!(ema.weights.allclose(&(&start + 0.1), 1e-6, 1e-6, false));
    assert!(Ema::new(1.0, flat).is_err());
}

#[test]
fn checkpoint_round_trip_is_exact_and_mismatch_is_named() {
    let dir = std::env::temp_dir().join(format!("ff-models-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let a = mlp(5);
    ferroflow_models::checkpoint::save_tensors(&a.params().named_of(a.params().flat()), &path).unwrap();
    let b = mlp(6);
    assert!(!a.params().flat().allclose(b.params().flat(), 0.0, 0.0, false));
    b.params().load(&path).unwrap();
    assert!(a.params().flat().equal(b.params().flat()));
    tch::manual_seed(0);
    let wide = Mlp::new(
        MlpConfig {
            width: 32,
            ..MlpConfig::benchmark(2)
        },
        Device::Cpu,
    )
    .unwrap();
    let err = wide.params().load(&path).unwrap_err().to_string();
    assert!(err.contains("net.0.weight") && err.contains("[64, 3]"), "{err}");
    // No temporary file is left beside the checkpoint.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The forward-mode divergence (tangents through the layers) against autograd's, for every activation, a
/// Fourier time embedding and a time per sample: the exact divergence, Hutchinson's estimate with the same
/// probes, and the output itself; in f64, so they agree to rounding.
#[test]
fn forward_mode_divergence_matches_autograd_for_every_activation() {
    use ferroflow_models::Activation;
    use ferroflow_models::autograd::{divergence_exact, divergence_hutchinson};
    let activations = [
        Activation::Selu,
        Activation::Relu,
        Activation::Silu,
        Activation::Gelu,
        Activation::Tanh,
        Activation::Elu,
    ];
    for (idx, activation) in activations.into_iter().enumerate() {
        tch::manual_seed(idx as i64);
        let config = MlpConfig {
            dim: 3,
            width: 16,
            depth: 2,
            activation,
            time_embedding: if idx % 2 == 0 {
                TimeEmbedding::Concat {}
            } else {
                TimeEmbedding::Fourier { n_freq: 3 }
            },
            angle_columns: Vec::new(),
            num_classes: None,
        };
        let net = Mlp::new(config, Device::Cpu).unwrap();
        let params: Vec<Tensor> = net
            .params()
            .views()
            .iter()
            .map(|p| p.to_kind(Kind::Double))
            .collect();
        let x = Tensor::randn([7, 3], (Kind::Double, Device::Cpu));
        let t = Tensor::rand([7], (Kind::Double, Device::Cpu));
        let field = |x: &Tensor| net.forward_with(&params, x, &t, None).to_kind(Kind::Double);
        let (v, div) = divergence_exact(field, &x, false).unwrap();
        let (v_fwd, div_fwd) = net
            .divergence_forward(&params, &x, &t, None, i64::MAX)
            .expect("an MLP without angle columns has a forward mode");
        assert!(v.allclose(&v_fwd, 1e-12, 1e-12, false), "{activation:?}: output");
        assert!(
            div.allclose(&div_fwd, 1e-9, 1e-9, false),
            "{activation:?}: exact divergence {div} vs forward mode {div_fwd}"
        );
        let probes = Tensor::randn([4, 7, 3], (Kind::Double, Device::Cpu));
        let (_, estimate) = divergence_hutchinson(field, &x, &probes, false).unwrap();
        let (_, estimate_fwd) = net
            .divergence_forward(&params, &x, &t, Some(&probes), i64::MAX)
            .unwrap();
        assert!(
            estimate.allclose(&estimate_fwd, 1e-9, 1e-9, false),
            "{activation:?}: Hutchinson {estimate} vs forward mode {estimate_fwd}"
        );
        // Too many tangents for the bound: the caller is sent to autograd.
        assert!(net.divergence_forward(&params, &x, &t, None, 10).is_none());
    }
}

/// The fused kernel against libtorch: the velocity against the network's forward pass, the exact divergence
/// and Hutchinson's estimate against the forward mode (checked against autograd above), for every activation
/// the kernel covers, both time embeddings, a batch that is not a multiple of the tile, on 1 and 2 threads;
/// GELU and angle columns are declined.
#[test]
fn fused_kernel_matches_libtorch() {
    use ferroflow_models::Activation;
    use ferroflow_models::mlp_kernel::{MlpKernel, TILE};
    let n = TILE + 37;
    for (idx, activation) in [
        Activation::Selu,
        Activation::Relu,
        Activation::Silu,
        Activation::Tanh,
        Activation::Elu,
    ]
    .into_iter()
    .enumerate()
    {
        tch::manual_seed(idx as i64);
        let config = MlpConfig {
            dim: 3,
            width: 24,
            depth: 3,
            activation,
            time_embedding: if idx % 2 == 0 {
                TimeEmbedding::Concat {}
            } else {
                TimeEmbedding::Fourier { n_freq: 2 }
            },
            angle_columns: Vec::new(),
            num_classes: None,
        };
        let net = Mlp::new(config, Device::Cpu).unwrap();
        let params = net.params().views();
        let kernel = MlpKernel::new(&net, &params).expect("covered");
        let x = Tensor::randn([n as i64, 3], (Kind::Float, Device::Cpu)) * 1.5;
        let t = 0.37f32;
        let times = Tensor::from_slice(&[t]);
        let probes = Tensor::randn([2, n as i64, 3], (Kind::Float, Device::Cpu));
        let x_vec = Vec::<f32>::try_from(x.view([-1])).unwrap();
        let probes_vec = Vec::<f32>::try_from(probes.view([-1])).unwrap();
        let as_tensor = |v: &[f32], shape: &[i64]| Tensor::from_slice(v).view(shape);
        let want_v = net.forward_with(&params, &x, &times, None);
        let (_, want_exact) = net
            .divergence_forward(&params, &x, &times, None, i64::MAX)
            .unwrap();
        let (_, want_hutchinson) = net
            .divergence_forward(&params, &x, &times, Some(&probes), i64::MAX)
            .unwrap();
        for threads in [1, 2] {
            let mut v = vec![0.0f32; n * 3];
            kernel.velocity(&x_vec, t, &mut v, threads);
            let close = |a: &Tensor, b: &Tensor| a.allclose(b, 1e-4, 1e-5, false);
            assert!(
                close(&as_tensor(&v, &[n as i64, 3]), &want_v),
                "{activation:?}: velocity"
            );
            let mut div = vec![0.0f32; n];
            kernel.velocity_divergence(&x_vec, t, None, &mut v, &mut div, threads);
            assert!(
                close(&as_tensor(&v, &[n as i64, 3]), &want_v),
                "{activation:?}: velocity beside div"
            );
            assert!(
                close(&as_tensor(&div, &[n as i64]), &want_exact),
                "{activation:?}: exact divergence"
            );
            kernel.velocity_divergence(&x_vec, t, Some(&probes_vec), &mut v, &mut div, threads);
            assert!(
                close(&as_tensor(&div, &[n as i64]), &want_hutchinson),
                "{activation:?}: Hutchinson"
            );
        }
    }
    tch::manual_seed(0);
    let gelu = Mlp::new(
        MlpConfig {
            activation: Activation::Gelu,
            ..MlpConfig::benchmark(2)
        },
        Device::Cpu,
    )
    .unwrap();
    assert!(MlpKernel::new(&gelu, &gelu.params().views()).is_none());
}
