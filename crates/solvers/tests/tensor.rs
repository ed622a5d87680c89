//! With feature `tch`: the same solves on `tch::Tensor` (f32 and f64) agree with the ndarray ones.
#![cfg(feature = "tch")]

use ferroflow_solvers::{
    Field, Method, OdeOptions, Record, SampleBatch, SdeOptions, SolverError, State, log_likelihood,
    sample_flow_sde, solve, solve_with_trajectory, standard_normal_log_density,
};
use ndarray::{Array1, Array2, array};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// `v(t, x) = cos(t) x A^T - 0.1 x^3` with a rotation generator `A`, on the rows of `x`.
fn ndarray_field(t: f64, x: &Array2<f64>) -> Result<Array2<f64>, SolverError> {
    let a_transposed = array![[0.0, 1.5], [-1.5, 0.0]];
    Ok(x.dot(&a_transposed) * t.cos() - x.mapv(|v| 0.1 * v * v * v))
}

fn tensor_field(t: f64, x: &Tensor) -> Result<Tensor, SolverError> {
    let a_transposed = Tensor::from_slice(&[0.0, 1.5, -1.5, 0.0])
        .reshape([2, 2])
        .to_kind(x.kind());
    Ok(x.matmul(&a_transposed) * t.cos() - x.pow_tensor_scalar(3) * 0.1)
}

fn to_tensor(x: &Array2<f64>, kind: Kind) -> Tensor {
    let (n_rows, n_cols) = x.dim();
    Tensor::from_slice(x.as_slice().unwrap())
        .reshape([n_rows as i64, n_cols as i64])
        .to_kind(kind)
}

fn to_array(x: &Tensor) -> Array2<f64> {
    let size = x.size();
    let values: Vec<f64> = Vec::try_from(x.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    Array2::from_shape_vec((size[0] as usize, size[1] as usize), values).unwrap()
}

fn max_difference(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    (a - b).iter().fold(0.0, |acc, v| acc.max(v.abs()))
}

fn initial_batch() -> Array2<f64> {
    array![[1.0, 0.5], [-0.3, 0.8], [0.0, -1.2], [2.0, 0.1]]
}

#[test]
fn tensor_solves_match_ndarray_solves() {
    let x0 = initial_batch();
    let times = [0.0, 0.3, 0.65, 1.0];
    for options in [
        OdeOptions::fixed(Method::Euler, 50),
        OdeOptions::fixed(Method::Rk4, 20),
        OdeOptions::adaptive(Method::Dopri5, 1e-7, 1e-7),
    ] {
        let reference = solve_with_trajectory(&mut ndarray_field, x0.clone(), &times, &options).unwrap();
        for kind in [Kind::Float, Kind::Double] {
            let solution =
                solve_with_trajectory(&mut tensor_field, to_tensor(&x0, kind), &times, &options).unwrap();
            let error = max_difference(&to_array(&solution.state), &reference.state);
            let tolerance = if kind == Kind::Float { 1e-5 } else { 1e-9 };
            eprintln!(
                "{:?} {kind:?}: max difference to ndarray {error:.3e}",
                options.method
            );
            assert!(error < tolerance, "{:?} {kind:?}: {error:e}", options.method);
            for (state, expected) in solution.trajectory.iter().zip(&reference.trajectory) {
                assert!(max_difference(&to_array(state), expected) < tolerance);
            }
            if kind == Kind::Double {
                assert_eq!(solution.stats, reference.stats);
            }
        }
    }
    // Backward in time on tensors too.
    let options = OdeOptions::adaptive(Method::Dopri5, 1e-8, 1e-8);
    let forward = solve(
        &mut tensor_field,
        to_tensor(&x0, Kind::Double),
        0.0,
        1.0,
        &options,
    )
    .unwrap();
    let back = solve(&mut tensor_field, forward.state, 1.0, 0.0, &options).unwrap();
    assert!(max_difference(&to_array(&back.state), &x0) < 1e-6);
}

#[test]
fn tensor_state_operations_and_error_norm() {
    let y0 = Tensor::from_slice(&[1.0f32, -3.0]);
    let y1 = Tensor::from_slice(&[2.0f32, 1.0]);
    let err = Tensor::from_slice(&[1e-3f32, -2e-3]);
    let norm = Tensor::error_norm(&err, &y0, &y1, 1e-4, 1e-2);
    let reference = Array1::error_norm(
        &array![1e-3, -2e-3],
        &array![1.0, -3.0],
        &array![2.0, 1.0],
        1e-4,
        1e-2,
    );
    assert!((norm - reference).abs() < 1e-6 * reference);
    let mut x = Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true);
    let copy = x.clone_state();
    assert!(!copy.requires_grad());
    x.add_scaled(2.0, &copy);
    assert_eq!(Vec::<f64>::try_from(&x).unwrap(), vec![3.0, 6.0]);
    assert!(x.all_finite());
    assert!(!Tensor::from_slice(&[1.0f32, f32::NAN]).all_finite());
    let batch = Tensor::zeros([3, 2, 4], (Kind::Float, tch::Device::Cpu));
    assert_eq!((batch.n_samples(), batch.sample_dim()), (3, 8));
}

#[test]
fn tensor_likelihood_matches_the_linear_gaussian_closed_form() {
    // Source N(0, I) pushed to N(mu, s1^2 I); see tests/likelihood.rs.
    let (mu, s1) = ([1.0, -2.0], 0.5);
    let mut field = move |t: f64, x: &Tensor| -> Result<(Tensor, Tensor), SolverError> {
        let mu = Tensor::from_slice(&mu).to_kind(x.kind());
        let rate = (s1 - 1.0) / (1.0 - t + s1 * t);
        let velocity = (x - &mu * t) * rate + &mu;
        let divergence = Tensor::full([x.size()[0]], 2.0 * rate, (x.kind(), x.device()));
        Ok((velocity, divergence))
    };
    let x = initial_batch();
    let standardised = &x - &array![mu[0], mu[1]];
    let exact = (standardised / s1).standard_normal_log_density() - 2.0 * f64::ln(s1);
    let options = OdeOptions::adaptive(Method::Dopri5, 1e-10, 1e-10);
    let result = log_likelihood(
        &mut field,
        &to_tensor(&x, Kind::Double),
        standard_normal_log_density,
        &options,
    )
    .unwrap();
    let got: Vec<f64> = Vec::try_from(&result.log_density).unwrap();
    let error = got
        .iter()
        .zip(&exact)
        .fold(0.0f64, |acc, (a, b)| acc.max((a - b).abs()));
    eprintln!("tensor linear Gaussian likelihood error {error:.3e}");
    assert!(error < 1e-6, "{error:e}");
}

#[test]
fn tensor_flow_sde_with_a_seeded_rng_matches_ndarray() {
    let x0 = initial_batch();
    let options = SdeOptions {
        t0: 0.0,
        t1: 1.0,
        n_steps: 25,
        record: Record::Final,
    };
    let mut ndarray_score = |_t: f64, x: &Array2<f64>| -> Result<Array2<f64>, SolverError> { Ok(x * -1.0) };
    let mut tensor_score = |_t: f64, x: &Tensor| -> Result<Tensor, SolverError> { Ok(x * -1.0) };
    let reference = sample_flow_sde(
        &mut ndarray_field,
        &mut ndarray_score,
        |t| 0.5 * (1.0 - t),
        x0.clone(),
        &options,
        &mut ChaCha8Rng::seed_from_u64(9),
    )
    .unwrap();
    let solution = sample_flow_sde(
        &mut tensor_field,
        &mut tensor_score,
        |t| 0.5 * (1.0 - t),
        to_tensor(&x0, Kind::Double),
        &options,
        &mut ChaCha8Rng::seed_from_u64(9),
    )
    .unwrap();
    assert!(max_difference(&to_array(&solution.state), &reference.state) < 1e-12);
    // The field trait is usable on tensors directly.
    let velocity = Field::eval(&mut tensor_field, 0.0, &to_tensor(&x0, Kind::Double)).unwrap();
    assert_eq!(velocity.size(), vec![4, 2]);
}
