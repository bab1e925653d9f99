//! Reproducible random streams. Every draw of every stage (initial weights, shuffling, augmentation,
//! dropout, hold-out splits) comes from a stream named by the run's seed and what it is for, so a seed
//! reproduces a run whatever the batching, thread count or interruptions. Three derivations exist
//! because results already published depend on each of them; new code uses [`keyed`].

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::digest::Digest;

/// The default seed of every stage.
pub const DEFAULT_SEED: u64 = 1337;

/// Stream `stream` of the generator named by `(seed, purpose, index)` through SHA-256
/// (fine-tuning's draws and every new use).
pub fn keyed(seed: u64, purpose: &str, index: u64, stream: u64) -> ChaCha8Rng {
    let mut d = Digest::new();
    d.raw(&seed.to_le_bytes())
        .part(purpose.as_bytes())
        .raw(&index.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(d.bytes());
    rng.set_stream(stream);
    rng
}

/// Stream `image` of the generator named by `(seed, purpose, epoch)` through SplitMix-style mixing
/// (stage 1's draws).
pub fn mixed(seed: u64, purpose: u64, epoch: u64, image: u64) -> ChaCha8Rng {
    let mut z = seed
        ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    plain(z, image)
}

/// Stream `stream` of the generator seeded directly with `seed` (the stage-2 head's draws).
pub fn plain(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}
