//! Decode bombs: a file of a few hundred bytes that claims a 16000×16000 image is refused from its
//! header, naming the file and the limit, before any pixel buffer is allocated.

use std::path::Path;

use features::image_io::{decode_rgb8, MAX_PIXELS};
use testkit::synth::claimed_png;

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
