//! Times one training step of the U-Net (forward, backward and a FlatAdam update) on the CPU.
//!
//! `cargo run --release -p ferroflow-models --example unet_step -- [batch] [threads] [num_res_blocks] [conditional]`
//! (defaults 128, 2, the config's default, unconditional). Prints each of 1 warm-up and 5 timed steps and
//! their median.

use std::time::Instant;

use ferroflow_models::VelocityNet;
use ferroflow_models::optim::{FlatAdam, OptimizerConfig};
use ferroflow_models::unet::{Unet, UnetConfig};
use tch::{Device, Kind, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |idx: usize, default: usize| -> usize {
        args.get(idx)
            .map(|a| {
                a.parse()
                    .unwrap_or_else(|_| panic!("argument {} ({a}) is not a number", idx + 1))
            })
            .unwrap_or(default)
    };
    let batch = arg(0, 128) as i64;
    let threads = arg(1, 2);
    let mut config = UnetConfig::default();
    config.num_res_blocks = arg(2, config.num_res_blocks);
    if arg(3, 0) != 0 {
        config.num_classes = Some(10);
    }
    tch::set_num_threads(threads as i32);
    tch::manual_seed(0);
    let net = Unet::new(config.clone(), Device::Cpu).expect("valid config");
    let mut adam = FlatAdam::new(OptimizerConfig::default(), net.params().flat()).expect("valid optimizer");
    println!(
        "U-Net {config:?}: {} parameters; batch {batch}, {threads} threads",
        net.params().numel()
    );
    let opts = (Kind::Float, Device::Cpu);
    let labels = config
        .num_classes
        .map(|classes| Tensor::randint(classes as i64 + 1, [batch], (Kind::Int64, Device::Cpu)));
    let mut times = Vec::new();
    for step in 0..6 {
        let x1 = Tensor::randn([batch, 1, 28, 28], opts);
        let x0 = Tensor::randn([batch, 1, 28, 28], opts);
        let t = Tensor::rand([batch], opts);
        let tb = t.reshape([-1, 1, 1, 1]);
        let xt = &x0 * (1.0 - &tb) + &x1 * &tb;
        let target = &x1 - &x0;
        let start = Instant::now();
        let v = net.forward_with(&net.params().views(), &xt, &t, labels.as_ref());
        let loss = (v - target).square().mean(Kind::Float);
        let forward = start.elapsed().as_secs_f64();
        loss.backward();
        let backward = start.elapsed().as_secs_f64() - forward;
        adam.step(net.params().flat());
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "step {step}: {seconds:.3} s (forward {forward:.3}, backward {backward:.3}, Adam {:.3}){} (loss {:.4})",
            seconds - forward - backward,
            if step == 0 { " (warm-up)" } else { "" },
            loss.double_value(&[])
        );
        if step > 0 {
            times.push(seconds);
        }
    }
    times.sort_by(f64::total_cmp);
    println!("median of {} steps: {:.3} s", times.len(), times[times.len() / 2]);
}
