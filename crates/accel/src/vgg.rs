//! The frozen VGG conv base (or any cut of it, e.g. up to `block4_pool`) as a Candle network built
//! from the ONNX initializers of the model file: weights as `[out, in, 3, 3]` tensors on the
//! device, in f32, bf16 or f16, and the forward pass `[N, 3, H, W]` (preprocessed, NCHW) →
//! `[N, C, h, w]` f32.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
pub use crate::graph::Cut;
use crate::graph::{chain, conv_weights, Step};
use crate::ops;
use crate::train::BlockLayer;

/// One layer of the network.
#[derive(Debug, Clone)]
pub enum Layer {
    /// 3×3 stride-1 convolution with padding 1 (+ ReLU).
    Conv {
        /// ONNX node name, e.g. `block5_conv1`.
        node: String,
        /// `[out, in, 3, 3]` in the network's dtype.
        weight: Tensor,
        /// `[out]` in the network's dtype.
        bias: Tensor,
        relu: bool,
    },
    /// 2×2 stride-2 max pooling.
    MaxPool { node: String },
    /// A ReLU on its own.
    Relu { node: String },
}

/// The conv chain of a VGG-style ONNX model on a Candle device.
#[derive(Debug, Clone)]
pub struct Vgg {
    layers: Vec<Layer>,
    /// The cut tensor this network computes, e.g. `block5_pool`.
    output: String,
    in_channels: usize,
    out_channels: usize,
    dtype: DType,
    device: Device,
}

impl Vgg {
    /// Reads the chain up to `cut` from a serialized ONNX model and puts its weights on `device`
    /// in `dtype` (f32, bf16 or f16).
    pub fn from_onnx(model: &[u8], cut: Cut<'_>, device: &Device, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::Invalid(format!(
                "the network computes in f32, bf16 or f16, not {dtype:?}"
            )));
        }
        let c = chain(model, cut)?;
        let mut weights = conv_weights(&c.cut_bytes, &c.steps)?.into_iter();
        let mut layers = Vec::with_capacity(c.steps.len());
        let mut channels: Option<usize> = None;
        let mut in_channels = None;
        for s in c.steps {
            layers.push(match s {
                Step::Conv { node, relu, .. } => {
                    let Some(cw) = weights.next() else {
                        return Err(Error::Graph(format!("weights of '{node}' missing")));
                    };
                    let wd = [cw.out_channels, cw.in_channels];
                    if let Some(c) = channels {
                        if c != wd[1] {
                            return Err(Error::Graph(format!(
                                "'{node}' takes {} channels but gets {c}",
                                wd[1]
                            )));
                        }
                    }
                    in_channels.get_or_insert(wd[1]);
                    channels = Some(wd[0]);
                    Layer::Conv {
                        node,
                        weight: Tensor::from_vec(cw.w, (wd[0], wd[1], 3, 3), device)?
                            .to_dtype(dtype)?,
                        bias: Tensor::from_vec(cw.b, wd[0], device)?.to_dtype(dtype)?,
                        relu,
                    }
                }
                Step::MaxPool { node } => Layer::MaxPool { node },
                Step::Relu { node } => Layer::Relu { node },
            });
        }
        let (Some(in_channels), Some(out_channels)) = (in_channels, channels) else {
            return Err(Error::Graph("the chain has no convolution".into()));
        };
        Ok(Vgg {
            layers,
            output: c.output,
            in_channels,
            out_channels,
            dtype,
            device: device.clone(),
        })
    }

    /// [`Vgg::from_onnx`] on a model file.
    pub fn load(path: &Path, cut: Cut<'_>, device: &Device, dtype: DType) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Invalid(format!("cannot read the model {}: {e}", path.display()))
        })?;
        Self::from_onnx(&bytes, cut, device, dtype)
    }

    /// The same network in another dtype (weights converted on the device).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(match l {
                    Layer::Conv {
                        node,
                        weight,
                        bias,
                        relu,
                    } => Layer::Conv {
                        node: node.clone(),
                        weight: weight.to_dtype(dtype)?,
                        bias: bias.to_dtype(dtype)?,
                        relu: *relu,
                    },
                    other => other.clone(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Vgg {
            layers,
            dtype,
            ..self.clone()
        })
    }

    /// The layers in order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The tensor the network computes (e.g. `block5_pool`).
    pub fn output_tensor(&self) -> &str {
        &self.output
    }

    /// Channels of the output map.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The dtype of the weights and of the arithmetic.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Output shape `[C, h, w]` for an `H`×`W` input.
    pub fn output_dims(&self, h: usize, w: usize) -> Result<[usize; 3]> {
        let (mut h, mut w) = (h, w);
        for l in &self.layers {
            if let Layer::MaxPool { node } = l {
                if h < 2 || w < 2 {
                    return Err(Error::Invalid(format!(
                        "{node} pools a {h}×{w} map: the input image is too small"
                    )));
                }
                h /= 2;
                w /= 2;
            }
        }
        Ok([self.out_channels, h, w])
    }

    /// The feature maps `[N, C, h, w]` (f32) of a preprocessed NCHW batch `[N, 3, H, W]` (any
    /// float dtype, on any device: it is moved to the network's device and dtype).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_raw(x)?.to_dtype(DType::F32)?)
    }

    /// Like [`Vgg::forward`] but the output stays in the network's dtype.
    ///
    /// Candle has no half-precision products on the CPU: there a bf16/f16 network computes in
    /// f32 from its half weights and rounds every layer's output to the half dtype, which is how
    /// a GPU runs it (half inputs, f32 accumulation, half outputs) up to summation order.
    pub fn forward_raw(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if c != self.in_channels {
            return Err(Error::Invalid(format!(
                "the network takes {} input channels, the batch has {c}",
                self.in_channels
            )));
        }
        self.output_dims(h, w)?;
        let compute = if self.device.is_cpu() {
            DType::F32
        } else {
            self.dtype
        };
        let round = |t: Tensor| -> Result<Tensor> {
            Ok(if compute == self.dtype {
                t
            } else {
                t.to_dtype(self.dtype)?.to_dtype(compute)?
            })
        };
        let mut x = round(x.to_device(&self.device)?.to_dtype(compute)?)?;
        for l in &self.layers {
            x = match l {
                Layer::Conv {
                    weight, bias, relu, ..
                } => round(ops::conv_bias_relu(
                    &x,
                    &weight.to_dtype(compute)?,
                    &bias.to_dtype(compute)?,
                    1,
                    *relu,
                )?)?,
                Layer::MaxPool { .. } => ops::max_pool2(&x)?,
                Layer::Relu { .. } => x.relu()?,
            };
        }
        Ok(x.to_dtype(self.dtype)?)
    }

    /// Splits the network after its layer named `node` (e.g. `block4_pool`): the frozen part up
    /// to there, and the layers after it as a trainable block for
    /// [`crate::train::FineTuneNet`] (f32 kernels `[3, 3, in, out]`).
    pub fn split_after(&self, node: &str) -> Result<(Vgg, Vec<BlockLayer>)> {
        let name = |l: &Layer| -> String {
            match l {
                Layer::Conv { node, .. } | Layer::MaxPool { node } | Layer::Relu { node } => {
                    node.clone()
                }
            }
        };
        let at = self
            .layers
            .iter()
            .position(|l| name(l) == node)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "the network has no layer '{node}' (layers: {})",
                    self.layers.iter().map(name).collect::<Vec<_>>().join(", ")
                ))
            })?;
        let (head, tail) = self.layers.split_at(at + 1);
        let out_channels = head
            .iter()
            .rev()
            .find_map(|l| match l {
                Layer::Conv { weight, .. } => weight.dim(0).ok(),
                _ => None,
            })
            .ok_or_else(|| Error::Invalid(format!("no convolution up to '{node}'")))?;
        let block = tail
            .iter()
            .map(|l| match l {
                Layer::Conv {
                    weight, bias, relu, ..
                } => {
                    let (cout, cin, _, _) = weight.dims4()?;
                    let f32s = |t: &Tensor| -> Result<Vec<f32>> { Ok(ops::to_host(t)?) };
                    Ok(BlockLayer::Conv {
                        cin,
                        cout,
                        relu: *relu,
                        kernel: f32s(&weight.permute((2, 3, 1, 0))?.contiguous()?)?,
                        bias: f32s(bias)?,
                    })
                }
                Layer::MaxPool { .. } => Ok(BlockLayer::MaxPool),
                Layer::Relu { node } => Err(Error::Invalid(format!(
                    "a ReLU on its own ('{node}') cannot be trained as a block layer"
                ))),
            })
            .collect::<Result<_>>()?;
        let frozen = Vgg {
            layers: head.to_vec(),
            output: node.to_string(),
            out_channels,
            ..self.clone()
        };
        Ok((frozen, block))
    }

    /// The weights as `(name, tensor)` pairs (`<node>.weight` `[out, in, 3, 3]`, `<node>.bias`),
    /// e.g. for `candle_core::safetensors::save`.
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                Layer::Conv {
                    node, weight, bias, ..
                } => Some([
                    (format!("{node}.weight"), weight.clone()),
                    (format!("{node}.bias"), bias.clone()),
                ]),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Writes the weights (in the network's dtype) and the layer list to a safetensors file, to
    /// run the network where the ONNX file is not at hand (e.g. bf16 weights for a GPU machine).
    pub fn save(&self, path: &Path) -> Result<()> {
        let layers: Vec<String> = self
            .layers
            .iter()
            .map(|l| match l {
                Layer::Conv { node, relu, .. } => {
                    format!("conv:{node}:{}", if *relu { "relu" } else { "linear" })
                }
                Layer::MaxPool { node } => format!("pool:{node}"),
                Layer::Relu { node } => format!("relu:{node}"),
            })
            .collect();
        let meta = std::collections::HashMap::from([
            ("layers".to_string(), layers.join(";")),
            ("output".to_string(), self.output.clone()),
        ]);
        safetensors::serialize_to_file(self.named_weights(), Some(meta), path)
            .map_err(|e| Error::Invalid(format!("writing {}: {e}", path.display())))
    }

    /// Reads a network written by [`Vgg::save`] onto `device` in `dtype`.
    pub fn load_safetensors(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))?;
        let bad = |why: String| Error::Invalid(format!("{}: {why}", path.display()));
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let info = meta.metadata().clone().unwrap_or_default();
        let (Some(list), Some(output)) = (info.get("layers"), info.get("output")) else {
            return Err(bad("no layer list: write it with Vgg::save".into()));
        };
        let mut weights = candle_core::safetensors::load_buffer(&bytes, device)?;
        let mut take = |k: String| {
            weights
                .remove(&k)
                .ok_or_else(|| bad(format!("'{k}' missing")))
        };
        let mut layers = Vec::new();
        let (mut in_channels, mut out_channels) = (None, None);
        for item in list.split(';') {
            let parts: Vec<&str> = item.split(':').collect();
            layers.push(match parts.as_slice() {
                ["conv", node, act] => {
                    let weight = take(format!("{node}.weight"))?.to_dtype(dtype)?;
                    let bias = take(format!("{node}.bias"))?.to_dtype(dtype)?;
                    let (o, i, kh, kw) = weight.dims4()?;
                    if (kh, kw) != (3, 3) || bias.dims() != [o] {
                        return Err(bad(format!("'{node}' is not a 3×3 conv with its bias")));
                    }
                    in_channels.get_or_insert(i);
                    out_channels = Some(o);
                    Layer::Conv {
                        node: node.to_string(),
                        weight,
                        bias,
                        relu: *act == "relu",
                    }
                }
                ["pool", node] => Layer::MaxPool {
                    node: node.to_string(),
                },
                ["relu", node] => Layer::Relu {
                    node: node.to_string(),
                },
                _ => return Err(bad(format!("unknown layer '{item}'"))),
            });
        }
        let (Some(in_channels), Some(out_channels)) = (in_channels, out_channels) else {
            return Err(bad("no convolution".into()));
        };
        Ok(Vgg {
            layers,
            output: output.clone(),
            in_channels,
            out_channels,
            dtype,
            device: device.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_integer_dtypes_and_bad_bytes() {
        let e = Vgg::from_onnx(b"not onnx", Cut::ConvBase, &Device::Cpu, DType::U8).unwrap_err();
        assert!(e.to_string().contains("f32, bf16 or f16"), "{e}");
        let e = Vgg::from_onnx(b"not onnx", Cut::ConvBase, &Device::Cpu, DType::F32).unwrap_err();
        assert!(e.to_string().contains("ONNX"), "{e}");
    }
}
