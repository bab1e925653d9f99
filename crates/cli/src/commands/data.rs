//! `bottleneck data`: dataset preparation; `data dogs-vs-cats` builds the tutorial's layout from the
//! Kaggle / Microsoft archive (all logic lives in the `data` crate).

use std::path::PathBuf;

use anyhow::Context;
use data::dogs_vs_cats::{Config, Counts, Event};

use crate::args::Global;
use crate::progress;

#[derive(Debug, clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Build OUT/{train,validation,test}/{cats,dogs}/ from Kaggle's train.zip or Microsoft's kagglecatsanddogs zip.
    DogsVsCats(DogsVsCatsArgs),
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Per class, photos are taken by ascending ID: train gets IDs 0–999, validation 1000–1399, \
test 1400–2399 (the tutorial's split plus a test split). Corrupt photos are skipped and reported, and the next IDs \
fill their places.\n\nExamples:\n  bottleneck data dogs-vs-cats --out data/ --archive ~/Downloads/kagglecatsanddogs_5340.zip\n  \
bottleneck data dogs-vs-cats --out data/ --archive train.zip --force"
)]
pub struct DogsVsCatsArgs {
    /// Output folder; gets train/, validation/ and test/, each with cats/ and dogs/.
    #[arg(long)]
    pub out: PathBuf,
    /// Kaggle's train.zip, Microsoft's kagglecatsanddogs_*.zip, or the folder either was extracted to
    /// (default: search ./ and ~/Downloads, else download from Microsoft when online).
    #[arg(long)]
    pub archive: Option<PathBuf>,
    /// Replace existing OUT/train, OUT/validation, OUT/test.
    #[arg(long)]
    pub force: bool,
    /// Symlink to the photos of an extracted folder instead of copying them (keep the folder then).
    #[arg(long)]
    pub link: bool,
    /// Training photos per class.
    #[arg(long, default_value_t = 1000)]
    pub train: usize,
    /// Validation photos per class.
    #[arg(long, default_value_t = 400)]
    pub validation: usize,
    /// Test photos per class (0: no test split).
    #[arg(long, default_value_t = 1000)]
    pub test: usize,
    /// Lowest photo ID used.
    #[arg(long, default_value_t = 0)]
    pub first_id: u64,
    /// Never download the archive.
    #[arg(long)]
    pub offline: bool,
    /// Threads for checking photos (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(args: &DataArgs, global: &Global) -> anyhow::Result<()> {
    match &args.command {
        DataCommand::DogsVsCats(a) => dogs_vs_cats(a, global),
    }
}

/// The library configuration these flags describe.
pub fn config(args: &DogsVsCatsArgs) -> Config {
    let mut cfg = Config::new(&args.out);
    cfg.archive = args.archive.clone();
    cfg.counts = Counts {
        train: args.train,
        validation: args.validation,
        test: args.test,
    };
    cfg.first_id = args.first_id;
    cfg.force = args.force;
    cfg.link = args.link;
    cfg.threads = args.threads;
    if args.offline {
        cfg.download_url = None;
    }
    cfg
}

fn dogs_vs_cats(args: &DogsVsCatsArgs, global: &Global) -> anyhow::Result<()> {
    let cfg = config(args);
    let mut bar: Option<indicatif::ProgressBar> = None;
    let summary = data::build(&cfg, &mut |ev| match ev {
        Event::Found { archive } => {
            progress::note(global, format!("using {} (found)", archive.display()))
        }
        Event::Probing { url } => progress::note(global, format!("no archive found; trying {url}")),
        Event::Downloading { done, total } => {
            let b = bar.get_or_insert_with(|| {
                progress::bar(global, total.unwrap_or(0), "download", "bytes")
            });
            b.set_position(done);
        }
        Event::Source {
            path,
            kind,
            scheme,
            photos,
            ignored,
        } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            progress::note(
                global,
                format!(
                    "{}: {kind:?} with {scheme:?} names, {photos} photos ({ignored} other entries ignored)",
                    path.display()
                ),
            )
        }
        Event::Start { total } => bar = Some(progress::bar(global, total as u64, "photos", "img")),
        Event::Progress { done } => {
            if let Some(b) = &bar {
                b.set_position(done as u64);
            }
        }
        Event::Skipped { file, reason } => {
            let msg = format!("skipped {file}: {reason}");
            match &bar {
                Some(b) if !global.quiet && !global.json => b.println(msg),
                _ => progress::note(global, msg),
            }
        }
    })
    .with_context(|| format!("building the Dogs vs Cats layout in {}", args.out.display()))?;
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }

    progress::summary(global, &summary, || {
        println!(
            "{} ({:?}, {:?} names){} → {} ({}, {:.1} s)",
            summary.source.path.display(),
            summary.source.kind,
            summary.source.scheme,
            if summary.source.downloaded {
                ", downloaded"
            } else {
                ""
            },
            summary.out.display(),
            summary.mode,
            summary.seconds
        );
        for s in &summary.splits {
            let parts: Vec<String> = s
                .classes
                .iter()
                .map(|c| match (c.first_id, c.last_id) {
                    (Some(a), Some(b)) => format!("{} {} (IDs {a}–{b})", c.folder, c.count),
                    _ => format!("{} {}", c.folder, c.count),
                })
                .collect();
            println!("{:>12}: {}", s.split, parts.join(", "));
        }
        if !summary.skipped.is_empty() {
            println!("{} corrupt photos skipped:", summary.skipped.len());
            for k in &summary.skipped {
                println!("  {}: {}", k.file, k.reason);
            }
        }
        if summary.source.downloaded {
            println!(
                "the archive is kept at {} for later runs; delete it to free the space",
                summary.source.path.display()
            );
        }
        Ok(())
    })
}
