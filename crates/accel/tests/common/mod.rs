//! Helpers shared by the integration tests: running ONNX Runtime, layouts, real photos
//! (closeness measures: `testkit::compare`).

#![allow(dead_code)]

use features::onnx::Layout;
use features::preprocess::{Preprocess, Resize};
use features::runtime::{session, SessionOptions};

/// Runs an ONNX model with one image input (`[n, 3, s, s]` or `[n, s, s, 3]` by `layout`) on the
/// CPU execution provider and returns the first output's dims and values.
pub fn run_ort(
    model: &[u8],
    layout: Layout,
    s: usize,
    input: &[f32],
    n: usize,
) -> (Vec<usize>, Vec<f32>) {
    let mut r = session(model, &SessionOptions::default()).expect("ONNX Runtime session");
    let shape = match layout {
        Layout::Nchw => [n, 3, s, s],
        Layout::Nhwc => [n, s, s, 3],
    };
    let t = ort::value::TensorRef::from_array_view((shape, input)).expect("input tensor");
    let out = r.session.run(ort::inputs![t]).expect("run");
    let (dims, values) = out[0].try_extract_tensor::<f32>().expect("f32 output");
    (dims.iter().map(|&d| d as usize).collect(), values.to_vec())
}

/// `[n, h, w, c]` → `[n, c, h, w]`.
pub fn nhwc_to_nchw(x: &[f32], n: usize, h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for b in 0..n {
        for y in 0..h {
            for xx in 0..w {
                for ch in 0..c {
                    out[((b * c + ch) * h + y) * w + xx] = x[((b * h + y) * w + xx) * c + ch];
                }
            }
        }
    }
    out
}

/// `[n, 3, s, s]` → `[n, s, s, 3]`.
pub fn nchw_to_nhwc(x: &[f32], n: usize, s: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for b in 0..n {
        for c in 0..3 {
            for p in 0..s * s {
                out[(b * s * s + p) * 3 + c] = x[(b * 3 + c) * s * s + p];
            }
        }
    }
    out
}

/// The first `per_class` Dogs vs Cats validation photos of each class, preprocessed like
/// `extract` (Keras nearest resize to `size`, caffe), NCHW; and how many.
pub fn photos(shared: &std::path::Path, per_class: usize, size: usize) -> (Vec<f32>, usize) {
    let files = testkit::shared_photos(shared, "validation", per_class).unwrap();
    let per = 3 * size * size;
    let mut input = vec![0f32; files.len() * per];
    for (slot, f) in input.chunks_exact_mut(per).zip(&files) {
        features::extract::prepare(
            f,
            size as u32,
            Resize::Nearest,
            Preprocess::Caffe,
            Layout::Nchw,
            slot,
        )
        .unwrap();
    }
    (input, files.len())
}
