//! Classifier-free guidance: w = 0 is the conditional field, w > 0 the documented combination, an
//! unconditional model (or a class out of range) is refused, and mode seeking composes with it.

use ferroflow_guidance::{
    ClassifierFree, GuidanceError, ModeSeeking, ModeSeekingField, classifier_free_velocity,
    combine_classifier_free,
};
use ferroflow_models::{Init, Mlp, MlpConfig, ParamBuilder, ParamId, ParamStore, VelocityNet};
use ferroflow_solvers::{Method, OdeOptions, solve};
use tch::{Device, Kind, Tensor};

/// A small class-conditional field: `tanh(W x + b + t c + E[label]) + x / 2`, the null label `num_classes`.
struct ConditionalNet {
    params: ParamStore,
    weight: ParamId,
    bias: ParamId,
    time: ParamId,
    embedding: ParamId,
    num_classes: usize,
}

impl ConditionalNet {
    fn new(num_classes: usize) -> Self {
        tch::manual_seed(23);
        let mut builder = ParamBuilder::default();
        let weight = builder.add("weight", &[2, 2], Init::Uniform { bound: 1.0 });
        let bias = builder.add("bias", &[2], Init::Uniform { bound: 1.0 });
        let time = builder.add("time", &[2], Init::Uniform { bound: 1.0 });
        let embedding = builder.add(
            "embedding",
            &[num_classes as i64 + 1, 2],
            Init::Normal { std: 1.0 },
        );
        Self {
            params: builder.build(Device::Cpu),
            weight,
            bias,
            time,
            embedding,
            num_classes,
        }
    }
}

impl VelocityNet for ConditionalNet {
    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn forward_with(&self, params: &[Tensor], x: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Tensor {
        let batch = x.size()[0];
        let labels = match labels {
            Some(labels) => labels.shallow_clone(),
            None => Tensor::full([batch], self.num_classes as i64, (Kind::Int64, x.device())),
        };
        let label_term = Tensor::embedding(&params[self.embedding.0], &labels, -1, false, false);
        let time_term = t.reshape([-1, 1]) * params[self.time.0].reshape([1, 2]);
        (x.linear(&params[self.weight.0], Some(&params[self.bias.0])) + time_term + label_term).tanh()
            + x * 0.5
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.num_classes)
    }

    fn sample_shape(&self) -> Vec<i64> {
        vec![2]
    }
}

fn points() -> Tensor {
    tch::manual_seed(4);
    Tensor::randn([32, 2], (Kind::Float, Device::Cpu))
}

fn conditional(net: &ConditionalNet, x: &Tensor, t: f64, label: i64) -> Tensor {
    let labels = Tensor::full([x.size()[0]], label, (Kind::Int64, Device::Cpu));
    net.forward_with(
        &net.params.views(),
        x,
        &Tensor::from_slice(&[t as f32]),
        Some(&labels),
    )
}

#[test]
fn weight_zero_is_the_conditional_field_and_positive_weights_extrapolate() {
    let net = ConditionalNet::new(3);
    let params = net.params.views();
    let x = points();
    for class in 0..3 {
        let field = classifier_free_velocity(&net, &params, ClassifierFree { weight: 0.0, class }).unwrap();
        assert!(field(&x, 0.3).equal(&conditional(&net, &x, 0.3, class as i64)));
        // The classes differ, so the test would notice the wrong label.
        assert!(!field(&x, 0.3).equal(&conditional(&net, &x, 0.3, ((class + 1) % 3) as i64)));

        let weight = 2.5;
        let field = classifier_free_velocity(&net, &params, ClassifierFree { weight, class }).unwrap();
        let expected = conditional(&net, &x, 0.3, class as i64) * (1.0 + weight)
            - conditional(&net, &x, 0.3, 3) * weight;
        assert!(
            field(&x, 0.3).allclose(&expected, 1e-5, 1e-5, false),
            "class {class}"
        );
    }
    let a = Tensor::from_slice(&[1.0f32, 2.0]);
    let b = Tensor::from_slice(&[0.5f32, -1.0]);
    assert!(combine_classifier_free(&a, &b, 0.0).equal(&a));
    assert!(combine_classifier_free(&a, &b, 1.0).equal(&Tensor::from_slice(&[1.5f32, 5.0])));
}

#[test]
fn unconditional_models_and_classes_out_of_range_are_refused() {
    let mlp = Mlp::new(MlpConfig::benchmark(2), Device::Cpu).unwrap();
    let params = mlp.params().views();
    let err = classifier_free_velocity(
        &mlp,
        &params,
        ClassifierFree {
            weight: 1.0,
            class: 2,
        },
    )
    .err()
    .expect("an MLP has no classes");
    assert!(matches!(err, GuidanceError::Unconditional { class: 2 }));
    assert!(err.to_string().contains("unconditional"), "{err}");

    let net = ConditionalNet::new(3);
    let params = net.params.views();
    let err = classifier_free_velocity(
        &net,
        &params,
        ClassifierFree {
            weight: 1.0,
            class: 3,
        },
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            err,
            GuidanceError::ClassOutOfRange {
                class: 3,
                num_classes: 3
            }
        ),
        "{err}"
    );
    let err = classifier_free_velocity(
        &net,
        &params,
        ClassifierFree {
            weight: -1.0,
            class: 0,
        },
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            err,
            GuidanceError::InvalidConfig {
                key: "cfg.weight",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn mode_seeking_composes_with_classifier_free_guidance() {
    let net = ConditionalNet::new(3);
    let params = net.params.views();
    let cfg = classifier_free_velocity(
        &net,
        &params,
        ClassifierFree {
            weight: 1.5,
            class: 1,
        },
    )
    .unwrap();
    let options = OdeOptions::fixed(Method::Midpoint, 10);
    let mut plain = ModeSeekingField::new(&cfg, ModeSeeking::exact(0.0)).unwrap();
    let reference = solve(&mut plain, points(), 0.0, 1.0, &options).unwrap().state;
    let mut guided = ModeSeekingField::new(&cfg, ModeSeeking::exact(0.3)).unwrap();
    let state = solve(&mut guided, points(), 0.0, 1.0, &options).unwrap().state;
    assert!(state.isfinite().all().int64_value(&[]) == 1);
    assert!((&state - &reference).abs().max().double_value(&[]) > 1e-4);

    // The divergence gradient is taken of the guided field: check one evaluation against the estimator on the
    // CFG closure directly.
    let x = points();
    let direct = ferroflow_guidance::divergence_gradient_exact(|x| cfg(x, 0.4), &x).unwrap();
    let mut field = ModeSeekingField::new(&cfg, ModeSeeking::exact(0.3)).unwrap();
    let expected = &direct.velocity + &direct.gradient * 0.3;
    assert!(
        field
            .guided_velocity(0.4, &x)
            .unwrap()
            .allclose(&expected, 1e-5, 1e-6, false)
    );
}

#[test]
fn flat_states_reach_an_image_net_in_its_own_shape_and_come_back_flat() {
    // Solvers hold `[n, 784]`; the U-Net takes `[n, 1, 28, 28]`. The guided field must reshape both ways
    // and give exactly the combination of the net's own conditional and unconditional outputs.
    use ferroflow_models::unet::{Unet, UnetConfig};
    tch::manual_seed(5);
    let config = UnetConfig {
        channels: 4,
        channel_mult: vec![1],
        num_res_blocks: 1,
        attention_at: vec![],
        groups: 2,
        time_embedding_dim: 8,
        num_classes: Some(3),
    };
    let net = Unet::new(config, Device::Cpu).unwrap();
    let params = net.params().views();
    let flat = Tensor::randn([2, 784], (Kind::Float, Device::Cpu));
    let images = flat.view([2, 1, 28, 28]);
    let times = Tensor::from_slice(&[0.3f32]);
    let labels = |label: i64| Tensor::full([2], label, (Kind::Int64, Device::Cpu));
    let conditional = net.forward_with(&params, &images, &times, Some(&labels(1)));
    let unconditional = net.forward_with(&params, &images, &times, Some(&labels(3)));
    for weight in [0.0, 2.0] {
        let guided = classifier_free_velocity(&net, &params, ClassifierFree { weight, class: 1 }).unwrap();
        let v = guided(&flat, 0.3);
        assert_eq!(v.size(), vec![2, 784], "w = {weight}");
        let expected = combine_classifier_free(&conditional, &unconditional, weight).view([2, 784]);
        let gap = (&v - &expected).abs().max().double_value(&[]);
        assert!(gap < 1e-5, "w = {weight}: {gap}");
    }
}
