//! Which photos train and which validate: the named `--train-split` and `--val-split`, or, for a
//! one-split data folder (`DIR/<class>/`), the hold-out every stage shares (`features::holdout`).

use features::dataset::{Dataset, Split};
use features::holdout;

use crate::config::ScratchConfig;
use crate::error::{Error, Result};

/// `(train, validation)` photos of `ds` for `cfg`.
pub fn choose(ds: &Dataset, cfg: &ScratchConfig) -> Result<(Split, Split)> {
    if let ([only], None) = (&ds.splits[..], ds.split(&cfg.val_split)) {
        if only.name == "all" {
            let (train, val, _) =
                only.hold_out(holdout::DEFAULT_FRACTION, holdout::DEFAULT_SEED)?;
            return Ok((train, val));
        }
    }
    let names: Vec<&str> = ds.splits.iter().map(|s| s.name.as_str()).collect();
    let find = |name: &str, flag: &str| {
        ds.split(name).cloned().ok_or_else(|| {
            Error::Data(format!(
                "{}: no '{name}' split (found: {}); the data must be laid out as {}/<split>/<class>/*.jpg with a '{name}' folder, or pass {flag}",
                cfg.data.display(),
                names.join(", "),
                cfg.data.display()
            ))
        })
    };
    Ok((
        find(&cfg.train_split, "--train-split")?,
        find(&cfg.val_split, "--val-split")?,
    ))
}

/// How metrics describe the validation photos of the split loaded as `name`.
pub fn describe(name: &str) -> String {
    match name.strip_suffix(":validation") {
        Some(whole) => format!(
            "{} of {whole} held out (stratified, seed {})",
            holdout::DEFAULT_FRACTION,
            holdout::DEFAULT_SEED
        ),
        None => name.to_string(),
    }
}
