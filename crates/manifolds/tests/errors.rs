//! Bad input is refused with the variant and fields that say what was wrong: points off the manifold (naming
//! the norm or the angle's coordinate), NaN, wrong lengths, the antipodal log, zero vectors that cannot be
//! projected, invalid constructors; a product names its own coordinates.

mod common;

use std::f64::consts::PI;

use common::s2_t1;
use ferroflow_manifolds::{
    CUT_LOCUS_TOLERANCE, FlatTorus, Manifold, ManifoldError, ON_MANIFOLD_TOLERANCE, Product, Sphere,
};
use ndarray::{Array2, array};

#[test]
fn points_off_the_manifold_are_named() {
    let sphere = Sphere::new(3).unwrap();
    sphere.check_point(array![0.0, 0.6, 0.8].view(), 0.0).unwrap();
    sphere
        .check_point(array![0.0, 0.6, 0.8 + 5e-7].view(), ON_MANIFOLD_TOLERANCE)
        .unwrap();
    let error = sphere
        .check_point(array![0.0, 0.6, 0.9].view(), 1e-6)
        .unwrap_err();
    match &error {
        ManifoldError::OffSphere {
            coordinates,
            norm,
            tolerance,
        } => {
            assert_eq!(coordinates, &(0..3));
            assert!((norm - 0.9_f64.hypot(0.6)).abs() < 1e-15);
            assert_eq!(*tolerance, 1e-6);
        }
        other => panic!("expected OffSphere, got {other}"),
    }
    assert!(error.to_string().contains("norm"), "{error}");

    let torus = FlatTorus::new(2).unwrap();
    torus.check_point(array![-PI, PI - 1e-12].view(), 0.0).unwrap();
    let error = torus.check_point(array![0.0, PI].view(), 0.0).unwrap_err();
    assert!(
        matches!(error, ManifoldError::AngleOutOfRange { coordinate: 1, value, .. } if value == PI),
        "{error}"
    );
    let error = torus.check_point(array![-3.5, 0.0].view(), 1e-6).unwrap_err();
    assert!(
        matches!(error, ManifoldError::AngleOutOfRange { coordinate: 0, .. }),
        "{error}"
    );

    // In a product the error names the product's coordinates: the angle is coordinate 3.
    let product = s2_t1();
    let error = product
        .check_point(array![1.0, 0.0, 0.0, 4.0].view(), 1e-6)
        .unwrap_err();
    assert!(
        matches!(error, ManifoldError::AngleOutOfRange { coordinate: 3, .. }),
        "{error}"
    );
    let nested = Product::new(vec![Box::new(FlatTorus::new(1).unwrap()), Box::new(s2_t1())]).unwrap();
    let error = nested
        .check_point(array![0.0, 2.0, 0.0, 0.0, 0.0].view(), 1e-6)
        .unwrap_err();
    assert!(
        matches!(error, ManifoldError::OffSphere { ref coordinates, .. } if *coordinates == (1..4)),
        "{error}"
    );
    let error = nested
        .check_point(array![0.0, 1.0, 0.0, 0.0, 9.0].view(), 1e-6)
        .unwrap_err();
    assert!(
        matches!(error, ManifoldError::AngleOutOfRange { coordinate: 4, .. }),
        "{error}"
    );

    // Batches name the row.
    let batch = array![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]];
    let error = sphere.check_points(batch.view(), 1e-6).unwrap_err();
    assert!(
        matches!(error, ManifoldError::InSample { sample_idx: 2, .. }),
        "{error}"
    );
    assert!(
        error.to_string().starts_with("sample 2: point is off the sphere"),
        "{error}"
    );
    let error = sphere
        .check_point(array![1.0, 0.0, 0.0].view(), -1.0)
        .unwrap_err();
    assert!(
        matches!(
            error,
            ManifoldError::InvalidParameter {
                name: "tolerance",
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn nan_and_wrong_lengths_are_refused_by_every_map() {
    let product = s2_t1();
    let x = array![1.0, 0.0, 0.0, 0.5];
    let nan = array![0.0, 0.0, 0.0, f64::NAN];
    let short = array![1.0, 0.0, 0.0];
    let results = [
        product.exp(x.view(), nan.view()).map(|_| ()),
        product.log(nan.view(), x.view()).map(|_| ()),
        product.project_tangent(x.view(), nan.view()).map(|_| ()),
        product.inner(x.view(), x.view(), nan.view()).map(|_| ()),
        product.dist(x.view(), nan.view()).map(|_| ()),
        product.geodesic(x.view(), nan.view(), 0.5).map(|_| ()),
        product.check_point(nan.view(), 1.0),
    ];
    for result in results {
        let error = result.unwrap_err();
        assert!(
            matches!(error, ManifoldError::NonFinite { coordinate: 3, .. }),
            "{error}"
        );
    }
    let results = [
        product.exp(x.view(), short.view()).map(|_| ()),
        product.log(short.view(), x.view()).map(|_| ()),
        product.tangent_basis(short.view()).map(|_| ()),
        product
            .log_differential(x.view(), x.view(), short.view())
            .map(|_| ()),
    ];
    for result in results {
        let error = result.unwrap_err();
        assert!(
            matches!(error, ManifoldError::DimensionMismatch { expected: 4, found: 3, ref manifold, .. } if manifold == "S^2 x T^1"),
            "{error}"
        );
    }
    let sphere = Sphere::new(3).unwrap();
    let error = sphere
        .geodesic(short.view(), short.view(), f64::INFINITY)
        .unwrap_err();
    assert!(
        matches!(error, ManifoldError::InvalidParameter { name: "s", .. }),
        "{error}"
    );
    let error = sphere
        .check_points(Array2::<f64>::zeros((2, 4)).view(), 1e-6)
        .unwrap_err();
    assert!(matches!(error, ManifoldError::ShapeMismatch { .. }), "{error}");
}

#[test]
fn the_antipodal_log_is_refused_as_the_cut_locus() {
    let sphere = Sphere::new(3).unwrap();
    let x = array![0.0, 0.0, 1.0];
    let error = sphere.log(x.view(), (-&x).view()).unwrap_err();
    match error {
        ManifoldError::CutLocus {
            coordinates,
            distance,
        } => {
            assert_eq!(coordinates, 0..3);
            assert!((distance - PI).abs() < 1e-15);
        }
        other => panic!("expected CutLocus, got {other}"),
    }
    // Within the tolerance of antipodal: refused; just outside it: a unit direction times nearly pi.
    let nearly = sphere
        .project(array![0.5 * CUT_LOCUS_TOLERANCE, 0.0, -1.0].view())
        .unwrap();
    assert!(matches!(
        sphere.log(x.view(), nearly.view()),
        Err(ManifoldError::CutLocus { .. })
    ));
    let outside = sphere
        .project(array![10.0 * CUT_LOCUS_TOLERANCE, 0.0, -1.0].view())
        .unwrap();
    let v = sphere.log(x.view(), outside.view()).unwrap();
    assert!(
        (v.dot(&v).sqrt() - (PI - 10.0 * CUT_LOCUS_TOLERANCE)).abs() < 1e-12,
        "{v}"
    );
    assert!(v[0] > 0.0 && v[1] == 0.0 && v[2].abs() < 1e-15);
    // The distance is total, and so is the geodesic through the antipode.
    assert!((sphere.dist(x.view(), (-&x).view()).unwrap() - PI).abs() < 1e-15);
    let through = sphere
        .geodesic(x.view(), array![PI, 0.0, 0.0].view(), 1.0)
        .unwrap();
    assert!((&through.position + &x).iter().all(|e| e.abs() < 1e-15));
    // The log differential shares the log's domain.
    let w = array![1.0, 0.0, 0.0];
    assert!(matches!(
        sphere.log_differential(x.view(), (-&x).view(), w.view()),
        Err(ManifoldError::CutLocus { .. })
    ));
    // In a product the sphere factor's coordinates are named.
    let nested = Product::new(vec![
        Box::new(FlatTorus::new(2).unwrap()),
        Box::new(Sphere::new(3).unwrap()),
    ])
    .unwrap();
    let a = array![0.0, 0.0, 1.0, 0.0, 0.0];
    let b = array![0.0, 0.0, -1.0, 0.0, 0.0];
    let error = nested.log(a.view(), b.view()).unwrap_err();
    assert!(
        matches!(error, ManifoldError::CutLocus { ref coordinates, .. } if *coordinates == (2..5)),
        "{error}"
    );
}

#[test]
fn zero_vectors_that_cannot_be_projected_are_refused() {
    let sphere = Sphere::new(3).unwrap();
    let zero = array![0.0, 0.0, 0.0];
    assert!(matches!(
        sphere.project(zero.view()),
        Err(ManifoldError::ZeroNorm { .. })
    ));
    assert!(matches!(
        sphere.project_tangent(zero.view(), array![1.0, 0.0, 0.0].view()),
        Err(ManifoldError::ZeroNorm { .. })
    ));
    let product = s2_t1();
    let error = product.project(array![0.0, 0.0, 0.0, 1.0].view()).unwrap_err();
    assert!(
        matches!(error, ManifoldError::ZeroNorm { ref coordinates } if *coordinates == (0..3)),
        "{error}"
    );
    // A zero tangent vector is fine everywhere (see geometry.rs); the torus projects anything finite.
    let torus = FlatTorus::new(1).unwrap();
    assert_eq!(torus.project(array![0.0].view()).unwrap(), array![0.0]);
}

#[test]
fn constructors_refuse_degenerate_manifolds() {
    assert!(matches!(
        Sphere::new(1),
        Err(ManifoldError::InvalidParameter {
            name: "ambient_dim",
            ..
        })
    ));
    assert!(matches!(
        Sphere::new(0),
        Err(ManifoldError::InvalidParameter {
            name: "ambient_dim",
            ..
        })
    ));
    assert!(matches!(
        FlatTorus::new(0),
        Err(ManifoldError::InvalidParameter { name: "dim", .. })
    ));
    assert!(matches!(
        Product::new(vec![]),
        Err(ManifoldError::Empty { what: "product", .. })
    ));
    let sphere = Sphere::new(2).unwrap();
    assert_eq!(
        (sphere.name(), sphere.ambient_dim(), sphere.intrinsic_dim()),
        ("S^1".to_owned(), 2, 1)
    );
}
