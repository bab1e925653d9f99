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

/// Prints a command's summary: JSON on stdout with `--json`, nothing with `--quiet`, else the human form.
pub fn summary<T: serde::Serialize>(
    global: &Global,
    value: &T,
    human: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if global.json {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    } else if global.quiet {
        Ok(())
    } else {
        human()
    }
}
