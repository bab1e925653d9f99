//! Weights read back from a file are checked before use: a NaN or infinite value (a damaged file,
//! or one saved after training diverged) is named, never served as a result.

/// `"NaN at index 12"` / `"inf at index 3"` for the first value that is not finite, if any.
pub fn first_non_finite(values: &[f32]) -> Option<String> {
    values
        .iter()
        .position(|v| !v.is_finite())
        .map(|i| format!("{} at index {i}", values[i]))
}

/// The first of `tensors` (name, values) holding a value that is not finite, with that value.
pub fn first_non_finite_in<'a, I>(tensors: I) -> Option<String>
where
    I: IntoIterator<Item = (&'a str, &'a [f32])>,
{
    tensors
        .into_iter()
        .find_map(|(name, v)| first_non_finite(v).map(|bad| format!("tensor {name:?} holds {bad}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bad_value_is_named() {
        assert_eq!(first_non_finite(&[1.0, 2.0]), None);
        assert_eq!(
            first_non_finite(&[1.0, f32::NAN, f32::INFINITY]).as_deref(),
            Some("NaN at index 1")
        );
        let a = [0.0f32];
        let b = [f32::NEG_INFINITY];
        assert_eq!(
            first_non_finite_in([("a", &a[..]), ("b", &b[..])]).as_deref(),
            Some("tensor \"b\" holds -inf at index 0")
        );
    }
}
