//! Decode bombs: a file of a few hundred bytes that claims a 16000×16000 image is refused from its
//! header, naming the file and the limit, before any pixel buffer is allocated.

use std::path::Path;

use features::image_io::{decode_rgb8, MAX_PIXELS};

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out
}

/// A PNG whose header says `w`×`h` RGB8, followed by an empty image-data chunk.
fn claimed_png(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

#[test]
fn a_small_file_claiming_a_huge_image_is_refused_before_decoding() {
    let bomb = claimed_png(16_000, 16_000);
    assert!(bomb.len() < 200);
    let err = decode_rgb8(&bomb, Path::new("photos/bomb.png"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("photos/bomb.png"), "{err}");
    assert!(
        err.contains("16000×16000") && err.contains(&format!("limit {} MP", MAX_PIXELS >> 20)),
        "{err}"
    );
    // Under the limit, the same broken file fails for what it is (no pixel data), not for its size.
    let small = decode_rgb8(&claimed_png(64, 64), Path::new("small.png"))
        .unwrap_err()
        .to_string();
    assert!(!small.contains("too large"), "{small}");
}
