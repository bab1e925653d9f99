//! Progress bars on stderr (hidden with `--quiet` or `--json`).

use indicatif::{ProgressBar, ProgressStyle};

use crate::args::Global;

/// A bar for `total` items named `label`, with rate and ETA; hidden when the user asked for quiet output.
pub fn bar(global: &Global, total: u64, label: &str, unit: &str) -> ProgressBar {
    if global.quiet || global.json {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    let template = format!(
        "{{prefix:>12}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{per_sec}} ETA {{eta}} {{msg}}"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(label.to_string());
    pb
}

/// Prints a line on stderr unless quiet.
pub fn note(global: &Global, msg: impl AsRef<str>) {
    if !global.quiet {
        eprintln!("{}", msg.as_ref());
    }
}
