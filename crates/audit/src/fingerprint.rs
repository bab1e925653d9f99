//! Pixel fingerprints that confirm the near-duplicates embeddings only suggest: a pair whose
//! cosine is below `--duplicate-cosine` but at least [`CANDIDATE_COSINE`] is a near-duplicate when
//! the photos' perceptual hashes (the signs of the 63 lowest DCT frequencies of a 32×32 grayscale
//! thumbnail, around their median) differ in at most [`MAX_DISTANCE`] bits. Each photo is hashed
//! whole and as its centred 90 % and 80 % crops, so a copy with its borders cropped still matches.
//! Re-encoding and resizing move a hash by 0–2 bits; distinct photos with similar embeddings
//! differ by 12 or more (BENCHMARKS.md, "Finding the photos that hurt").

use std::collections::HashMap;
use std::path::Path;

use image::imageops::{self, FilterType};
use image::RgbImage;
use rayon::prelude::*;

use crate::rows::Rows;
use crate::sheets::inside;

/// Lowest embedding cosine at which a pair is checked by its pixels.
pub const CANDIDATE_COSINE: f32 = 0.80;

/// Most differing hash bits for two photos to be one photo.
pub const MAX_DISTANCE: u32 = 10;

/// Most candidate pairs checked (the most similar ones), so the photos read stay bounded.
pub const MAX_CHECKED: usize = 20_000;

/// Side of the thumbnail and of the block of frequencies kept.
const THUMB: usize = 32;
const KEEP: usize = 8;

/// Centred crops hashed, as fractions of each side.
const CROPS: [f64; 3] = [1.0, 0.9, 0.8];

/// A photo's hashes, whole and cropped.
pub type Hashes = [u64; CROPS.len()];

/// The orthonormal DCT-II rows `0..KEEP` of size `THUMB`.
fn dct_rows() -> Vec<[f64; THUMB]> {
    (0..KEEP)
        .map(|k| {
            let scale = if k == 0 {
                (1.0 / THUMB as f64).sqrt()
            } else {
                (2.0 / THUMB as f64).sqrt()
            };
            std::array::from_fn(|i| {
                scale
                    * (std::f64::consts::PI * (2 * i + 1) as f64 * k as f64 / (2 * THUMB) as f64)
                        .cos()
            })
        })
        .collect()
}

/// The perceptual hash of `img`: 63 bits, one per low frequency but the constant one.
fn phash(img: &RgbImage, dct: &[[f64; THUMB]]) -> u64 {
    let gray = imageops::grayscale(img);
    let small = imageops::resize(&gray, THUMB as u32, THUMB as u32, FilterType::Triangle);
    let px = |r: usize, c: usize| f64::from(small.get_pixel(c as u32, r as u32)[0]);
    // rows_k[k][c] = Σ_r dct[k][r] · px(r, c); coef[k][l] = Σ_c rows_k[k][c] · dct[l][c]
    let rows_k: Vec<[f64; THUMB]> = dct
        .iter()
        .map(|d| std::array::from_fn(|c| (0..THUMB).map(|r| d[r] * px(r, c)).sum()))
        .collect();
    let mut coef = Vec::with_capacity(KEEP * KEEP - 1);
    for (k, row) in rows_k.iter().enumerate() {
        for (l, d) in dct.iter().enumerate() {
            if k + l > 0 {
                coef.push((0..THUMB).map(|c| row[c] * d[c]).sum::<f64>());
            }
        }
    }
    let mut sorted = coef.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    coef.iter()
        .enumerate()
        .fold(0u64, |h, (i, &v)| if v > median { h | (1 << i) } else { h })
}

/// The hashes of `img` whole and of its centred crops.
pub fn hashes(img: &RgbImage) -> Hashes {
    let dct = dct_rows();
    let (w, h) = (f64::from(img.width()), f64::from(img.height()));
    CROPS.map(|s| {
        let (cw, ch) = ((w * s).round().max(1.0), (h * s).round().max(1.0));
        let (x, y) = (((w - cw) / 2.0).round(), ((h - ch) / 2.0).round());
        let crop = imageops::crop_imm(img, x as u32, y as u32, cw as u32, ch as u32).to_image();
        phash(&crop, &dct)
    })
}

/// Bits apart: the whole of one photo against the whole or a crop of the other.
pub fn distance(a: &Hashes, b: &Hashes) -> u32 {
    let whole_a = a.iter().map(|x| (x ^ b[0]).count_ones());
    let whole_b = b.iter().map(|y| (a[0] ^ y).count_ones());
    whole_a.chain(whole_b).min().unwrap_or(u64::BITS)
}

/// The hash distance of each candidate pair `(cosine, row i, row j)`, `None` when a photo of the
/// pair cannot be read from `data`.
pub fn check(data: &Path, rows: &Rows, pairs: &[(f32, usize, usize)]) -> Vec<Option<u32>> {
    let mut needed: Vec<usize> = pairs.iter().flat_map(|&(_, i, j)| [i, j]).collect();
    needed.sort_unstable();
    needed.dedup();
    let hashed: HashMap<usize, Hashes> = needed
        .par_iter()
        .filter_map(|&r| {
            let path = inside(data, &rows.files[r])?;
            let photo = features::image_io::load_rgb8(&path).ok()?;
            Some((r, hashes(&photo.image)))
        })
        .collect();
    pairs
        .iter()
        .map(|(_, i, j)| Some(distance(hashed.get(i)?, hashed.get(j)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A photo-like picture: smooth shading with a few blobs placed by `seed`.
    fn picture(w: u32, h: u32, seed: u32) -> RgbImage {
        let blobs: Vec<(f64, f64, f64)> = (0..5)
            .map(|k| {
                let v = (seed * 7 + k * 13) as f64;
                (
                    (v * 0.37).sin().abs(),
                    (v * 0.71).cos().abs(),
                    0.08 + 0.1 * (v * 0.13).sin().abs(),
                )
            })
            .collect();
        RgbImage::from_fn(w, h, |x, y| {
            let (u, v) = (f64::from(x) / f64::from(w), f64::from(y) / f64::from(h));
            let mut l = 60.0 + 90.0 * u * (seed % 3) as f64 / 2.0 + 40.0 * v;
            for &(bx, by, r) in &blobs {
                if (u - bx).powi(2) + (v - by).powi(2) < r * r {
                    l = 230.0 - l / 2.0;
                }
            }
            let l = l.clamp(0.0, 255.0) as u8;
            Rgb([l, l.saturating_add(20), l / 2])
        })
    }

    #[test]
    fn copies_match_and_other_pictures_do_not() {
        let a = picture(300, 200, 1);
        let ha = hashes(&a);
        let resized = imageops::resize(&a, 240, 160, FilterType::Triangle);
        let cropped = imageops::crop_imm(&a, 15, 10, 270, 180).to_image();
        let mut jpeg = Vec::new();
        a.write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        let reencoded = image::load_from_memory(&jpeg).unwrap().into_rgb8();
        for (what, copy) in [
            ("resized", resized),
            ("cropped", cropped),
            ("JPEG", reencoded),
        ] {
            let d = distance(&ha, &hashes(&copy));
            assert!(d <= MAX_DISTANCE, "{what}: {d} bits");
        }
        for seed in 2..8 {
            let d = distance(&ha, &hashes(&picture(300, 200, seed)));
            assert!(d > MAX_DISTANCE, "picture {seed}: {d} bits");
        }
        assert_eq!(distance(&ha, &ha), 0);
    }
}
