//! Quantization arithmetic shared by the graph rewrite and the tests: activation scales and zero points
//! from a calibrated range, per-channel symmetric int8 weights, int32 biases, and the element-wise
//! quantize/dequantize formulas of ONNX `QuantizeLinear`/`DequantizeLinear` (round half to even, saturate).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

crate::choices! {
    /// Integer type of quantized activations (weights are always int8).
    pub enum ActType("activation type") {
        /// `uint8` activations, `[0, 255]`: ONNX Runtime's x86 default (U8S8 kernels, VNNI `vpdpbusd`).
        Uint8 = "uint8" | "u8",
        /// `int8` activations, `[-128, 127]` (S8S8 kernels).
        Int8 = "int8" | "s8" | "i8",
    }
}

impl ActType {
    /// Smallest and largest representable value.
    pub fn range(self) -> (i32, i32) {
        match self {
            ActType::Uint8 => (0, 255),
            ActType::Int8 => (-128, 127),
        }
    }

    /// ONNX `TensorProto.DataType` of this type (2 = UINT8, 3 = INT8).
    pub fn onnx_type(self) -> i32 {
        match self {
            ActType::Uint8 => 2,
            ActType::Int8 => 3,
        }
    }
}

/// Scale and zero point of one quantized tensor: `real = scale · (q − zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i32,
}

/// Asymmetric activation parameters for the calibrated range `[min, max]`, as ONNX Runtime's
/// `compute_scale_zp`: the range is widened to contain 0 (so zero is exact), `scale = (max − min) / (qmax − qmin)`
/// in f64, `zero_point = round(qmin − min / scale)`; a degenerate range gives scale 1, zero point 0.
pub fn activation_params(min: f32, max: f32, ty: ActType) -> QParams {
    let (qmin, qmax) = ty.range();
    let rmin = f64::from(min.min(0.0));
    let rmax = f64::from(max.max(0.0));
    let scale = (rmax - rmin) / f64::from(qmax - qmin);
    if !scale.is_finite() || scale < f64::from(f32::MIN_POSITIVE) {
        return QParams {
            scale: 1.0,
            zero_point: 0,
        };
    }
    let zp = (f64::from(qmin) - rmin / scale).round_ties_even();
    QParams {
        scale: scale as f32,
        zero_point: (zp as i32).clamp(qmin, qmax),
    }
}

/// `QuantizeLinear` of one value: `saturate(round_half_even(x / scale) + zero_point)` to the type's range.
pub fn quantize(x: f32, p: QParams, ty: ActType) -> i32 {
    let (qmin, qmax) = ty.range();
    let v = (x / p.scale).round_ties_even() + p.zero_point as f32;
    if v.is_nan() {
        return p.zero_point;
    }
    (v.clamp(qmin as f32, qmax as f32)) as i32
}

/// `DequantizeLinear` of one value: `(q − zero_point) · scale`.
pub fn dequantize(q: i32, p: QParams) -> f32 {
    (q - p.zero_point) as f32 * p.scale
}

/// The range int8 weights are quantized to. Without VNNI, x86 CPUs multiply uint8 activations by
/// int8 weights with `vpmaddubsw`, which adds pairs of products into int16 and saturates when
/// weights use the full range (2·255·127 > 32767): ONNX Runtime then computes wrong features
/// (cosine 0.91 to FP32 on the shared VGG16, measured on an AVX2-only machine). Weights in
/// `[−63, 63]` keep every pair sum in range (ONNX Runtime's `reduce_range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightRange {
    /// `[−127, 127]`: CPUs with VNNI (AVX512-VNNI, AVX-VNNI, AMX) and non-x86 CPUs.
    Full,
    /// `[−63, 63]` (7 bits): x86 CPUs without VNNI.
    Reduced,
}

impl WeightRange {
    /// The range that computes exact integer products on this CPU.
    pub fn for_this_cpu() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if !(std::arch::is_x86_feature_detected!("avx512vnni")
                || std::arch::is_x86_feature_detected!("avxvnni"))
            {
                return WeightRange::Reduced;
            }
        }
        WeightRange::Full
    }

    /// The largest weight magnitude.
    pub fn qmax(self) -> f32 {
        match self {
            WeightRange::Full => 127.0,
            WeightRange::Reduced => 63.0,
        }
    }

    /// How the weights are described in `Int8Info` and in the cache key.
    pub fn describe(self) -> &'static str {
        match self {
            WeightRange::Full => "int8 symmetric per-channel (axis 0)",
            WeightRange::Reduced => {
                "int8 symmetric per-channel (axis 0), reduced to [-63, 63] for a CPU without VNNI"
            }
        }
    }
}

/// A weight tensor quantized per output channel (axis 0), symmetric int8 with zero point 0.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelWeights {
    /// Same layout as the float weights.
    pub values: Vec<i8>,
    /// One scale per output channel: `max |w| / 127` (1 for an all-zero channel).
    pub scales: Vec<f32>,
}

/// Quantizes `w` (first dimension = `channels` output channels) per channel: symmetric range
/// `[−q, q]` (`q` = 127, or 63 with [`WeightRange::Reduced`]), `scale_c = max_c |w| / q`,
/// `q = round_half_even(w / scale_c)` — ONNX Runtime's `per_channel=True, weight_type=QInt8`
/// scheme (with `reduce_range` for the reduced range).
pub fn quantize_weights(w: &[f32], channels: usize, range: WeightRange) -> Result<ChannelWeights> {
    if channels == 0 || !w.len().is_multiple_of(channels) {
        return Err(Error::Graph(format!(
            "cannot split {} weights into {channels} output channels",
            w.len()
        )));
    }
    let per = w.len() / channels;
    let mut values = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(channels);
    for chunk in w.chunks_exact(per) {
        let absmax = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = f64::from(absmax) * 2.0 / (2.0 * f64::from(range.qmax()));
        let scale = if !scale.is_finite() || scale < f64::from(f32::MIN_POSITIVE) {
            1.0f32
        } else {
            scale as f32
        };
        scales.push(scale);
        values.extend(
            chunk
                .iter()
                .map(|&v| (v / scale).round_ties_even().clamp(-128.0, 127.0) as i8),
        );
    }
    Ok(ChannelWeights { values, scales })
}

/// Quantizes a bias to int32 with zero point 0 and per-channel scale `input_scale · weight_scale_c`
/// (what integer convolution accumulates in), saturating to the int32 range. Returns `(values, scales)`.
pub fn quantize_bias(
    b: &[f32],
    input_scale: f32,
    weight_scales: &[f32],
) -> Result<(Vec<i32>, Vec<f32>)> {
    if b.len() != weight_scales.len() {
        return Err(Error::Graph(format!(
            "the bias has {} values but the weights have {} output channels",
            b.len(),
            weight_scales.len()
        )));
    }
    let mut values = Vec::with_capacity(b.len());
    let mut scales = Vec::with_capacity(b.len());
    for (&v, &ws) in b.iter().zip(weight_scales) {
        let mut s = input_scale * ws;
        if s == 0.0 || !s.is_finite() {
            s = 1.0;
        }
        let q = (f64::from(v) / f64::from(s)).round_ties_even();
        values.push(q.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32);
        scales.push(s);
    }
    Ok((values, scales))
}
