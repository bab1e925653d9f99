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

/// A stage's progress on stderr: one bar per phase (images decoded, draws cached, …) and lines printed
/// above it, so stage commands and `tutorial` show the same thing.
pub struct Phases<'g> {
    global: &'g Global,
    bar: Option<ProgressBar>,
}

impl<'g> Phases<'g> {
    pub fn new(global: &'g Global) -> Self {
        Phases { global, bar: None }
    }

    /// A line above the bar, or on its own when no bar is shown; nothing when quiet.
    pub fn say(&self, line: impl AsRef<str>) {
        match &self.bar {
            Some(b) if !b.is_hidden() => b.println(line.as_ref()),
            _ => note(self.global, line),
        }
    }

    /// Starts a bar of `total` items (finishing the previous one).
    pub fn start(&mut self, label: &str, total: usize, unit: &str) {
        self.end();
        self.bar = Some(bar(self.global, total as u64, label, unit));
    }

    pub fn set(&self, done: usize) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
    }

    /// Clears the current bar.
    pub fn end(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    /// Shows what a training stage (finetune, scratch) reports; lines start with `indent`.
    pub fn stage_event(&mut self, ev: train::stage::StageEvent<'_>, indent: &str) {
        use train::stage::StageEvent as E;
        match ev {
            E::Info(s) => self.say(format!("{indent}{s}")),
            E::Skipped {
                split,
                file,
                reason,
            } => self.say(format!("{indent}{split}: skipped {file}: {reason}")),
            E::PhaseStart { name, total } => self.start(&name, total, "img"),
            E::Progress { done } => self.set(done),
            E::PhaseEnd => self.end(),
            E::Epoch {
                metrics,
                epochs,
                images_per_second,
            } => self.say(format!(
                "{indent}{}",
                epoch_line(metrics, epochs, Some(images_per_second))
            )),
        }
    }
}

/// One epoch's line, as every training command prints it.
pub fn epoch_line(
    m: &train::metrics::EpochMetrics,
    epochs: usize,
    images_per_second: Option<f64>,
) -> String {
    let mut s = format!(
        "epoch {:>3}/{epochs}: loss {:.4} acc {:.4} | val_loss {:.4} val_acc {:.4} | {:.1} s",
        m.epoch, m.loss, m.accuracy, m.val_loss, m.val_accuracy, m.seconds
    );
    if let Some(r) = images_per_second {
        s.push_str(&format!(", {r:.1} img/s"));
    }
    s
}
