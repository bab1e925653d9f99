//! How close two computations of the same values are: the measures the parity tests and the GPU
//! check report.

/// `max|a − b| / max|a|` (`reference` is a).
pub fn max_rel(reference: &[f32], other: &[f32]) -> f32 {
    assert_eq!(
        reference.len(),
        other.len(),
        "compared vectors differ in length"
    );
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = reference
        .iter()
        .zip(other)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale.max(f32::MIN_POSITIVE)
}

/// Cosine similarity of the two vectors (in f64).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(f64::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_vectors_are_at_zero_and_one() {
        let a = [1.0, -2.0, 4.0];
        assert_eq!(max_rel(&a, &a), 0.0);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-12);
        assert_eq!(max_rel(&a, &[1.0, -2.0, 3.0]), 0.25);
        assert!(cosine(&a, &[-1.0, 2.0, -4.0]) < -0.999);
    }
}
