//! Identities of the discrete operators, checked with proptest on seeded random data: the discrete divergence
//! theorem, exactness of the second-order stencils on polynomials, and the known error of central differences.

mod common;

use common::SplitMix;
use ferroflow_continuity::{
    CellRegion, Domain, FaceField, Grid, boundary_outflow, central_divergence, central_gradient,
    diffusion_from_noise, faces_from_cells, fv_divergence, numeric_divergence, region_integral,
};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x5eed_c0de),
        failure_persistence: None,
        ..Config::default()
    }
}

/// A grid of 1 to 3 dims with the given cell counts over a random box, and a generator seeded for its data.
fn grid_strategy(min_cells: usize) -> impl Strategy<Value = (Grid, u64)> {
    (1usize..=3)
        .prop_flat_map(move |dims| {
            (
                proptest::collection::vec(min_cells..=min_cells + 5, dims),
                any::<u64>(),
            )
        })
        .prop_map(|(cells, seed)| {
            let mut rng = SplitMix(seed);
            let lower: Vec<f64> = cells.iter().map(|_| rng.uniform(-3.0, 1.0)).collect();
            let upper: Vec<f64> = lower.iter().map(|low| low + rng.uniform(0.5, 4.0)).collect();
            (
                Grid::new(&Domain::new(lower, upper).unwrap(), &cells).unwrap(),
                rng.next_u64(),
            )
        })
}

/// A quadratic `c + b . x + x^T Q x` with `Q` symmetric, and its gradient.
struct Quadratic {
    constant: f64,
    linear: Vec<f64>,
    quadratic: Vec<Vec<f64>>,
}

impl Quadratic {
    fn random(dims: usize, rng: &mut SplitMix) -> Self {
        // Draw the upper triangle and mirror it, so Q is symmetric.
        let upper: Vec<Vec<f64>> = (0..dims)
            .map(|row| (row..dims).map(|_| rng.uniform(-2.0, 2.0)).collect())
            .collect();
        let quadratic = (0..dims)
            .map(|row| {
                (0..dims)
                    .map(|col| {
                        if col >= row {
                            upper[row][col - row]
                        } else {
                            upper[col][row - col]
                        }
                    })
                    .collect()
            })
            .collect();
        Self {
            constant: rng.uniform(-2.0, 2.0),
            linear: (0..dims).map(|_| rng.uniform(-2.0, 2.0)).collect(),
            quadratic,
        }
    }

    fn value(&self, x: &[f64]) -> f64 {
        let linear: f64 = self.linear.iter().zip(x).map(|(b, v)| b * v).sum();
        let quadratic: f64 = (0..x.len())
            .flat_map(|row| (0..x.len()).map(move |col| (row, col)))
            .map(|(row, col)| x[row] * self.quadratic[row][col] * x[col])
            .sum();
        self.constant + linear + quadratic
    }

    fn derivative(&self, x: &[f64], axis: usize) -> f64 {
        self.linear[axis]
            + 2.0
                * self.quadratic[axis]
                    .iter()
                    .zip(x)
                    .map(|(q, v)| q * v)
                    .sum::<f64>()
    }
}

/// The largest absolute entry of `a - b`.
fn max_difference(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b).fold(0.0, |max, (x, y)| max.max((x - y).abs()))
}

proptest! {
    #![proptest_config(config(64))]

    /// Summing the finite-volume divergence times cell volume over any box of cells gives the net boundary flux:
    /// the interior face fluxes cancel in pairs.
    #[test]
    fn divergence_theorem_holds_to_rounding((grid, seed) in grid_strategy(1)) {
        let mut rng = SplitMix(seed);
        let flux = FaceField {
            normal_components: (0..grid.dims())
                .map(|axis| ArrayD::from_shape_fn(IxDyn(&grid.face_shape(axis)), |_| rng.uniform(-5.0, 5.0)))
                .collect(),
        };
        let lower: Vec<usize> = grid.cells().iter().map(|&cells| rng.index(0, cells)).collect();
        let upper: Vec<usize> = lower.iter().zip(grid.cells()).map(|(&low, &cells)| rng.index(low + 1, cells + 1)).collect();
        let region = CellRegion::new(&grid, &lower, &upper).unwrap();
        let divergence = fv_divergence(&grid, &flux).unwrap();
        let volume_integral = region_integral(&grid, &region, divergence.view()).unwrap();
        let outflow = boundary_outflow(&grid, &region, &flux).unwrap();
        // The rounding scale: every face flux times its area, summed.
        let scale: f64 = flux.normal_components.iter().enumerate()
            .map(|(axis, faces)| faces.iter().map(|f| f.abs()).sum::<f64>() * grid.face_area(axis)).sum();
        prop_assert!((volume_integral - outflow).abs() <= 1e-13 * scale.max(1.0) * grid.n_cells() as f64,
            "volume integral {volume_integral} vs outflow {outflow}");
        // Over the whole grid only the domain boundary faces remain.
        let whole = CellRegion::whole(&grid);
        let total = region_integral(&grid, &whole, divergence.view()).unwrap();
        prop_assert!((total - boundary_outflow(&grid, &whole, &flux).unwrap()).abs() <= 1e-13 * scale.max(1.0) * grid.n_cells() as f64);
    }

    /// Central differences, with their one-sided second-order ends, are exact for quadratics; so are the
    /// finite-volume divergence of face-sampled quadratics and the face interpolation of linear fields.
    #[test]
    fn second_order_stencils_are_exact_for_polynomials((grid, seed) in grid_strategy(3)) {
        let dims = grid.dims();
        let mut rng = SplitMix(seed);
        let scalar = Quadratic::random(dims, &mut rng);
        let values = grid.sample_cells("quadratic", |x| scalar.value(x)).unwrap();
        let gradient = central_gradient(&grid, values.view()).unwrap();
        let expected = grid.sample_vector_cells("gradient", |x, out| {
            for (axis, slot) in out.iter_mut().enumerate() { *slot = scalar.derivative(x, axis); }
        }).unwrap();
        prop_assert!(max_difference(&gradient, &expected) < 1e-9, "gradient error {}", max_difference(&gradient, &expected));

        let components: Vec<Quadratic> = (0..dims).map(|_| Quadratic::random(dims, &mut rng)).collect();
        let field = |x: &[f64], out: &mut [f64]| {
            for (slot, component) in out.iter_mut().zip(&components) { *slot = component.value(x); }
        };
        let analytic_divergence = grid.sample_cells("divergence", |x| {
            (0..dims).map(|axis| components[axis].derivative(x, axis)).sum()
        }).unwrap();
        let cell_field = grid.sample_vector_cells("field", field).unwrap();
        let central = central_divergence(&grid, cell_field.view()).unwrap();
        prop_assert!(max_difference(&central, &analytic_divergence) < 1e-9);
        let finite_volume = fv_divergence(&grid, &grid.sample_faces("field", field).unwrap()).unwrap();
        prop_assert!(max_difference(&finite_volume, &analytic_divergence) < 1e-9);

        let slopes: Vec<Vec<f64>> = (0..dims).map(|_| (0..=dims).map(|_| rng.uniform(-2.0, 2.0)).collect()).collect();
        let linear = |x: &[f64], out: &mut [f64]| {
            for (slot, row) in out.iter_mut().zip(&slopes) {
                *slot = row[dims] + row.iter().zip(x).map(|(a, v)| a * v).sum::<f64>();
            }
        };
        let interpolated = faces_from_cells(&grid, grid.sample_vector_cells("linear", linear).unwrap().view()).unwrap();
        let sampled = grid.sample_faces("linear", linear).unwrap();
        for (got, want) in interpolated.normal_components.iter().zip(&sampled.normal_components) {
            prop_assert!(max_difference(got, want) < 1e-9);
        }
    }

    /// For `v = (x^2 y, y^3 - x z, x y z + z^2)` central differences differ from the divergence
    /// `3 x y + 3 y^2 + 2 z` by exactly `h^2` (from the cubic `y^3`; every other term is at most quadratic in the
    /// variable differentiated).
    #[test]
    fn numeric_divergence_has_the_known_error_on_a_polynomial(
        x in -2.0..2.0f64, y in -2.0..2.0f64, z in -2.0..2.0f64, step in 1e-3..1e-1f64,
    ) {
        let field = |p: &[f64], _t: f64, out: &mut [f64]| {
            out[0] = p[0] * p[0] * p[1];
            out[1] = p[1].powi(3) - p[0] * p[2];
            out[2] = p[0] * p[1] * p[2] + p[2] * p[2];
        };
        let analytic = 3.0 * x * y + 3.0 * y * y + 2.0 * z;
        let numeric = numeric_divergence(field, &[x, y, z], 0.0, step).unwrap();
        prop_assert!((numeric - analytic - step * step).abs() < 1e-10, "numeric {numeric}, analytic {analytic}, h {step}");
    }
}

/// Away from polynomials the stencils are second order, including the one-sided ends.
#[test]
fn central_gradient_is_second_order_on_a_smooth_field() {
    let domain = Domain::new(vec![-1.0, 0.0], vec![2.0, 2.5]).unwrap();
    let mut errors = Vec::new();
    let resolutions = [10, 20, 40, 80];
    for cells in resolutions {
        let grid = Grid::uniform(&domain, cells).unwrap();
        let values = grid
            .sample_cells("f", |x| (1.3 * x[0]).sin() * (0.7 * x[1]).exp())
            .unwrap();
        let gradient = central_gradient(&grid, values.view()).unwrap();
        let expected = grid
            .sample_vector_cells("grad f", |x, out| {
                out[0] = 1.3 * (1.3 * x[0]).cos() * (0.7 * x[1]).exp();
                out[1] = 0.7 * (1.3 * x[0]).sin() * (0.7 * x[1]).exp();
            })
            .unwrap();
        errors.push(max_difference(&gradient, &expected));
    }
    let orders: Vec<f64> = errors.windows(2).map(|pair| (pair[0] / pair[1]).log2()).collect();
    println!(
        "central gradient max errors [{}], orders {orders:.3?}",
        common::scientific(&errors)
    );
    assert!(
        orders.iter().all(|order| (1.8..=2.2).contains(order)),
        "orders {orders:?}"
    );
}

#[test]
fn diffusion_from_noise_is_half_sigma_sigma_transpose() {
    // sigma is 2 x 3 (two state dims driven by three Brownian motions).
    let noise = [1.0, 0.5, -1.0, 0.0, 2.0, 0.5];
    let mut diffusion = [0.0; 4];
    diffusion_from_noise(&noise, 2, 3, &mut diffusion).unwrap();
    assert_eq!(diffusion, [0.5 * 2.25, 0.5 * 0.5, 0.5 * 0.5, 0.5 * 4.25]);
}
