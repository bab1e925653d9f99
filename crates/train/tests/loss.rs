//! Stable losses: agree with the naive formulas where those work, stay finite where they don't,
//! and the tensor versions differentiate to the textbook gradients.

use candle_core::{Device, Tensor, Var};
use train::loss::{
    bce_with_logits, bce_with_logits_mean, sigmoid, softmax_cross_entropy,
    softmax_cross_entropy_mean,
};

fn naive_bce(z: f64, y: f64) -> f64 {
    let p = 1.0 / (1.0 + (-z).exp());
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

#[test]
fn stable_bce_matches_naive_on_moderate_logits() {
    for &z in &[-8.0f32, -3.0, -0.7, 0.0, 0.3, 2.5, 9.0] {
        for &y in &[0.0f32, 1.0] {
            let got = bce_with_logits(z, y) as f64;
            let want = naive_bce(z as f64, y as f64);
            assert!(
                (got - want).abs() < 1e-5 * want.max(1.0),
                "z={z} y={y}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn stable_bce_is_finite_at_extremes() {
    // The naive form computes log(0) here.
    assert!(!naive_bce(100.0, 0.0).is_finite() || naive_bce(100.0, 0.0) > 1e15);
    for &(z, y, want) in &[
        (100.0f32, 0.0f32, 100.0f64),
        (-100.0, 1.0, 100.0),
        (100.0, 1.0, 0.0),
        (-100.0, 0.0, 0.0),
    ] {
        let got = bce_with_logits(z, y) as f64;
        assert!(got.is_finite(), "z={z} y={y}");
        assert!((got - want).abs() < 1e-4, "z={z} y={y}: {got} vs {want}");
    }
    assert_eq!(
        sigmoid(-100.0),
        (-100.0f32).exp() / (1.0 + (-100.0f32).exp())
    );
    assert_eq!(sigmoid(100.0), 1.0);
    assert!(sigmoid(-1000.0) >= 0.0 && sigmoid(1000.0) <= 1.0);
}

#[test]
fn softmax_cross_entropy_matches_naive_and_survives_large_logits() {
    let z = [1.0f32, -2.0, 0.5];
    let mut p = [0f32; 3];
    let got = softmax_cross_entropy(&z, 2, &mut p);
    let sum: f64 = z.iter().map(|&v| (v as f64).exp()).sum();
    let want = -((0.5f64).exp() / sum).ln();
    assert!((got as f64 - want).abs() < 1e-6);
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    let big = [1000.0f32, -1000.0, 0.0];
    let l = softmax_cross_entropy(&big, 1, &mut p);
    assert!(l.is_finite() && (l - 2000.0).abs() < 1e-2, "{l}");
}

#[test]
fn tensor_bce_matches_scalar_and_has_sigmoid_gradient() {
    let zs = [-100.0f32, -2.0, 0.0, 1.5, 100.0];
    let ys = [1.0f32, 0.0, 1.0, 1.0, 0.0];
    let z = Var::from_slice(&zs, 5, &Device::Cpu).unwrap();
    let y = Tensor::from_slice(&ys, 5, &Device::Cpu).unwrap();
    let loss = bce_with_logits_mean(z.as_tensor(), &y).unwrap();
    let want: f32 = zs
        .iter()
        .zip(&ys)
        .map(|(&z, &y)| bce_with_logits(z, y))
        .sum::<f32>()
        / 5.0;
    let got = loss.to_scalar::<f32>().unwrap();
    assert!(
        got.is_finite() && (got - want).abs() < 1e-4,
        "{got} vs {want}"
    );
    let grads = loss.backward().unwrap();
    let g = grads.get(z.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    for i in 0..5 {
        let want = (sigmoid(zs[i]) - ys[i]) / 5.0;
        assert!((g[i] - want).abs() < 1e-5, "grad {i}: {} vs {want}", g[i]);
    }
}

#[test]
fn tensor_softmax_cross_entropy_gradient_is_p_minus_onehot() {
    let zs = [0.2f32, -1.0, 3.0, 0.5, 0.5, 0.5];
    let z = Var::from_slice(&zs, (2, 3), &Device::Cpu).unwrap();
    let labels = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
    let loss = softmax_cross_entropy_mean(z.as_tensor(), &labels).unwrap();
    let mut p = [0f32; 3];
    let want = (softmax_cross_entropy(&zs[..3], 2, &mut p)
        + softmax_cross_entropy(&zs[3..], 0, &mut p))
        / 2.0;
    assert!((loss.to_scalar::<f32>().unwrap() - want).abs() < 1e-5);
    let g = loss.backward().unwrap();
    let g = g
        .get(z.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (row, label) in [(0usize, 2usize), (1, 0)] {
        softmax_cross_entropy(&zs[row * 3..row * 3 + 3], label, &mut p);
        for c in 0..3 {
            let want = (p[c] - if c == label { 1.0 } else { 0.0 }) / 2.0;
            assert!((g[row * 3 + c] - want).abs() < 1e-5);
        }
    }
}
