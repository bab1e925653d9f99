//! The `metadata_props` of an exported classifier: everything a consumer needs to feed it exactly
//! as it was trained (decode, resize filter and convention, channel order, scaling, mean/std,
//! layout, size), what it outputs (classes), and where it came from (stage, backbone sha256).

use features::onnx::Layout;
use features::preprocess::{Preprocess, Resize};
use serde::Serialize;

use crate::classifier::Classifier;

/// Format marker written as `format`.
pub const FORMAT: &str = "bottleneck-classifier";
/// Version of the metadata layout written as `format_version`.
pub const FORMAT_VERSION: u32 = 1;

/// Per-channel normalisation as numbers: `x[c] = (pixel[c] · scale − mean[c]) / std[c]`, where
/// `pixel` is the 0–255 value of channel `c` in `channel_order`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Normalization {
    pub channel_order: &'static str,
    pub scale: f64,
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

/// The numbers behind a [`Preprocess`] (the same arithmetic as `Preprocess::pixel`).
pub fn normalization(p: Preprocess) -> Normalization {
    match p {
        Preprocess::Caffe => Normalization {
            channel_order: "BGR",
            scale: 1.0,
            mean: [103.939, 116.779, 123.68],
            std: [1.0; 3],
        },
        Preprocess::Torch => Normalization {
            channel_order: "RGB",
            scale: 1.0 / 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        },
        Preprocess::Unit => Normalization {
            channel_order: "RGB",
            scale: 1.0 / 255.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        },
        Preprocess::Lite => Normalization {
            channel_order: "RGB",
            scale: 1.0,
            mean: [127.0; 3],
            std: [128.0; 3],
        },
    }
}

/// How the resize filter picks pixels, in words precise enough to reimplement it.
pub fn resize_convention(r: Resize) -> &'static str {
    match r {
        Resize::Nearest => {
            "PIL Image.NEAREST as Keras load_img(target_size=(S, S)): the whole image is stretched to S×S \
             (no crop, no padding, aspect ratio not kept); output pixel i takes source pixel \
             floor(pos_i) with pos_0 = step/2, pos_(i+1) = pos_i + step, step = in/out, in double precision"
        }
        Resize::Bilinear => {
            "PIL-style convolution resize with a bilinear (triangle) filter, antialiased when shrinking \
             (PIL Image.BILINEAR); the whole image is stretched to S×S (no crop, no padding)"
        }
        Resize::Bicubic => {
            "PIL-style convolution resize with a Catmull-Rom bicubic filter (a = -0.5), antialiased when \
             shrinking (PIL Image.BICUBIC); the whole image is stretched to S×S (no crop, no padding)"
        }
        Resize::Lanczos => {
            "PIL-style convolution resize with a Lanczos3 filter, antialiased when shrinking (PIL \
             Image.LANCZOS); the whole image is stretched to S×S (no crop, no padding)"
        }
        Resize::BilinearCrop => {
            "torchvision Resize(round(S*256/224)) + CenterCrop(S): the shorter side scaled to \
             round(S*256/224) and the longer by the same factor (truncated) with a PIL-style bilinear \
             filter, antialiased when shrinking; then the centre S×S cut out, offsets round((len-S)/2) \
             rounded half to even"
        }
        Resize::BicubicCrop => {
            "torchvision Resize(round(S*256/224), bicubic) + CenterCrop(S): the shorter side scaled to \
             round(S*256/224) and the longer by the same factor (truncated) with a PIL-style Catmull-Rom \
             bicubic filter, antialiased when shrinking; then the centre S×S cut out, offsets \
             round((len-S)/2) rounded half to even"
        }
    }
}

fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// The metadata entries of `c`'s ONNX graph, in a stable order.
pub fn entries(c: &Classifier) -> Vec<(String, String)> {
    let s = c.spec.size;
    let n = normalization(c.spec.preprocess);
    let (layout, shape) = match c.spec.layout {
        Layout::Nchw => ("NCHW", format!("[N,3,{s},{s}]")),
        Layout::Nhwc => ("NHWC", format!("[N,{s},{s},3]")),
    };
    let m = &c.meta;
    let items: Vec<(&str, String)> = vec![
        ("format", FORMAT.into()),
        ("format_version", FORMAT_VERSION.to_string()),
        ("stage", c.stage.name().into()),
        ("classes", json(&c.classes)),
        ("input", c.input.clone()),
        ("input_shape", shape),
        ("layout", layout.into()),
        ("output", crate::classifier::OUTPUT_NAME.into()),
        (
            "output_description",
            format!(
                "float32 [N,{}]: class probabilities in the order of 'classes' (rows sum to 1)",
                c.classes.len()
            ),
        ),
        ("image_size", s.to_string()),
        (
            "decode",
            "8-bit RGB; EXIF orientation applied; alpha dropped; grayscale replicated to 3 channels; \
             16-bit scaled to 8-bit"
                .into(),
        ),
        ("resize", c.spec.resize.name().into()),
        ("resize_convention", resize_convention(c.spec.resize).into()),
        ("preprocess", c.spec.preprocess.name().into()),
        ("channel_order", n.channel_order.into()),
        ("pixel_scale", json(&n.scale)),
        ("mean", json(&n.mean)),
        ("std", json(&n.std)),
        (
            "normalization",
            format!(
                "x[c] = (pixel[c] * pixel_scale - mean[c]) / std[c], pixel[c] in 0..255, channels in {} order \
                 (mean/std listed in that order), float32, layout {layout}",
                n.channel_order
            ),
        ),
        ("source_model", m.features.model.clone()),
        ("source_model_sha256", m.features.model_sha256.clone()),
        ("feature_tensor", m.features.output_tensor.clone()),
        ("precision", m.features.precision.clone()),
        ("val_accuracy", m.val_accuracy.to_string()),
        ("validation", m.validation.clone()),
    ];
    items.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
