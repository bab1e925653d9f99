//! Reproducible safetensors bytes: [`serialize`] is `safetensors::serialize` with the header
//! re-written with its keys (and the `__metadata__` keys) in sorted order, so that the same tensors
//! and metadata always give the same file — `safetensors::serialize` takes the metadata as a
//! `HashMap`, whose order changes from run to run. Every safetensors file of a run goes through it
//! (feature files write their own, already ordered, header).

use std::collections::{BTreeMap, HashMap};

use safetensors::tensor::{SafeTensorError, View};
use serde_json::Value;

/// `safetensors::serialize(data, Some(metadata))` with a sorted, reproducible header.
pub fn serialize<S, V, I>(
    data: I,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, SafeTensorError>
where
    S: AsRef<str> + Ord + std::fmt::Display,
    V: View,
    I: IntoIterator<Item = (S, V)>,
{
    safetensors::serialize(data, Some(metadata)).map(sorted_header)
}

/// `bytes` (a serialized safetensors file) with the header's keys sorted; the header keeps its
/// length, so the tensor data and its offsets are untouched. Bytes that are not a well-formed
/// safetensors file come back unchanged.
fn sorted_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let Some(n) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
        .filter(|&n| n > 0 && n.checked_add(8).is_some_and(|end| end <= bytes.len()))
    else {
        return bytes;
    };
    let Ok(header) = serde_json::from_slice::<BTreeMap<String, Value>>(&bytes[8..8 + n]) else {
        return bytes;
    };
    let header: BTreeMap<String, Value> = header.into_iter().map(|(k, v)| (k, sorted(v))).collect();
    let Ok(text) = serde_json::to_vec(&header) else {
        return bytes;
    };
    if text.len() > n {
        return bytes;
    }
    bytes[8..8 + text.len()].copy_from_slice(&text);
    bytes[8 + text.len()..8 + n].fill(b' ');
    bytes
}

/// `v` with every object's keys in sorted order (whatever order `serde_json` keeps).
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let ordered: BTreeMap<String, Value> =
                m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(ordered.into_iter().collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn file(meta: HashMap<String, String>) -> Vec<u8> {
        let data = [1f32, 2.0, 3.0];
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3], &raw)
            .expect("a valid view");
        serialize([("w", view)], meta).expect("serializes")
    }

    #[test]
    fn the_same_metadata_gives_the_same_bytes_and_stays_readable() {
        let pairs: Vec<(String, String)> = (0..40)
            .map(|i| (format!("key{i}"), format!("value {i}")))
            .collect();
        let a: HashMap<_, _> = pairs.iter().cloned().collect();
        let b: HashMap<_, _> = pairs.iter().rev().cloned().collect();
        let (fa, fb) = (file(a.clone()), file(b));
        assert!(fa == fb, "identical bytes whatever the map's order");
        let (_, read) = safetensors::SafeTensors::read_metadata(&fa).expect("readable");
        let meta: HashMap<String, String> = read.metadata().clone().expect("metadata kept");
        assert_eq!(meta, a);
        let st = safetensors::SafeTensors::deserialize(&fa).expect("readable");
        assert_eq!(st.tensor("w").expect("kept").data().len(), 12);
    }

    #[test]
    fn other_bytes_come_back_unchanged() {
        for junk in [
            vec![],
            vec![1, 2, 3],
            b"\xff\xff\xff\xff\xff\xff\xff\xffxx".to_vec(),
        ] {
            assert_eq!(sorted_header(junk.clone()), junk);
        }
    }
}
