//! `ImageF32`: an RGB image as interleaved (HWC) `f32` values on the 0–255 scale, what Keras holds
//! after `load_img` + `img_to_array`, convertible to and from `image::RgbImage`.

use image::RgbImage;

use crate::{Error, Result};

/// Row-major RGB image with interleaved channels: value `(x, y, ch)` is at `data[(y·width + x)·3 + ch]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageF32 {
    pub width: u32,
    pub height: u32,
    /// `height · width · 3` values, normally 0–255.
    pub data: Vec<f32>,
}

impl ImageF32 {
    /// A black image.
    pub fn new(width: u32, height: u32) -> Self {
        ImageF32 {
            width,
            height,
            data: vec![0.0; width as usize * height as usize * 3],
        }
    }

    /// Wraps an HWC buffer, checking its length.
    pub fn from_raw(width: u32, height: u32, data: Vec<f32>) -> Result<Self> {
        let want = width as usize * height as usize * 3;
        if data.len() != want {
            return Err(Error::Invalid(format!(
                "an RGB image of {width}×{height} needs {want} values, got {}",
                data.len()
            )));
        }
        Ok(ImageF32 {
            width,
            height,
            data,
        })
    }

    /// Builds an image from a function of `(x, y)` returning `[r, g, b]`.
    pub fn from_fn(width: u32, height: u32, mut f: impl FnMut(u32, u32) -> [f32; 3]) -> Self {
        let mut data = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height {
            for x in 0..width {
                data.extend_from_slice(&f(x, y));
            }
        }
        ImageF32 {
            width,
            height,
            data,
        }
    }

    /// The pixel at column `x`, row `y`. Panics when out of bounds.
    pub fn pixel(&self, x: u32, y: u32) -> [f32; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// The HWC values, ready for `preprocess::write_input_f32`.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Rounds to 8 bits, clamping to 0–255 (NaN becomes 0). A buffer whose length does not match
    /// `width`×`height` (fields edited by hand) gives a black image.
    pub fn to_rgb8(&self) -> RgbImage {
        let raw: Vec<u8> = self
            .data
            .iter()
            .map(|&v| {
                if v.is_nan() {
                    0
                } else {
                    v.round().clamp(0.0, 255.0) as u8
                }
            })
            .collect();
        RgbImage::from_raw(self.width, self.height, raw)
            .unwrap_or_else(|| RgbImage::new(self.width, self.height))
    }

    /// Makes this image `width`×`height` (contents unspecified afterwards), reusing the allocation.
    pub(crate) fn reshape(&mut self, width: u32, height: u32) {
        self.width = width;
        self.height = height;
        self.data.resize(width as usize * height as usize * 3, 0.0);
    }
}

impl From<&RgbImage> for ImageF32 {
    fn from(img: &RgbImage) -> Self {
        ImageF32 {
            width: img.width(),
            height: img.height(),
            data: img.as_raw().iter().map(|&v| v as f32).collect(),
        }
    }
}

impl From<&ImageF32> for RgbImage {
    fn from(img: &ImageF32) -> Self {
        img.to_rgb8()
    }
}
