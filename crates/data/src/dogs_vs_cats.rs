//! `data dogs-vs-cats`: the tutorial's `OUT/{train,validation,test}/{cats,dogs}/` layout from the Kaggle or
//! Microsoft archive. Per class, photos are taken by ascending ID from `first_id` on: the first `train`
//! usable ones go to train, the next `validation` to validation, the next `test` to test (defaults
//! 1000/400/1000: IDs 0–999, 1000–1399, 1400–2399 when none is corrupt). A photo that is empty, not
//! decodable or a truncated JPEG is skipped and reported, and the next ID takes its place.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::download::{self, KAGGLE_PAGE, MICROSOFT_URL};
use crate::locate::{self, LOOKED_FOR};
use crate::source::{Class, Listing, Photo, Scheme, Source, SourceKind};
use crate::{Error, Result};

/// Split folder names, in the order photos are assigned to them.
pub const SPLITS: [&str; 3] = ["train", "validation", "test"];

/// Photos per class in each split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub train: usize,
    pub validation: usize,
    pub test: usize,
}

impl Default for Counts {
    /// The tutorial's 1000 train + 400 validation per class, plus 1000 test.
    fn default() -> Self {
        Counts {
            train: 1000,
            validation: 400,
            test: 1000,
        }
    }
}

impl Counts {
    /// `(split, count)` in assignment order.
    pub fn splits(&self) -> [(&'static str, usize); 3] {
        [
            (SPLITS[0], self.train),
            (SPLITS[1], self.validation),
            (SPLITS[2], self.test),
        ]
    }

    /// Photos needed per class.
    pub fn per_class(&self) -> usize {
        self.train + self.validation + self.test
    }

    /// The split the `k`-th usable photo of a class goes to.
    fn split_of(&self, k: usize) -> &'static str {
        if k < self.train {
            SPLITS[0]
        } else if k < self.train + self.validation {
            SPLITS[1]
        } else {
            SPLITS[2]
        }
    }
}

/// Everything `build` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Output folder; gets `train/`, `validation/`, `test/` (a split with count 0 is not written).
    pub out: PathBuf,
    /// A zip file or an extracted folder; `None`: search `search_dirs`, then download.
    pub archive: Option<PathBuf>,
    pub counts: Counts,
    /// Lowest photo ID used (0 in the tutorial).
    pub first_id: u64,
    /// Replace existing output splits.
    pub force: bool,
    /// Symlink to the photos of an extracted folder instead of copying them.
    pub link: bool,
    /// Where to look for an archive when `archive` is `None` (the output folder is searched too).
    pub search_dirs: Vec<PathBuf>,
    /// URL to download the archive from when none is found; `None`: never use the network.
    pub download_url: Option<String>,
    /// Threads for the decode check (default: all cores).
    pub threads: Option<usize>,
}

impl Config {
    /// Defaults: tutorial counts, IDs from 0, no overwrite, copies, usual search folders, Microsoft download.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Config {
            out: out.into(),
            archive: None,
            counts: Counts::default(),
            first_id: 0,
            force: false,
            link: false,
            search_dirs: locate::default_search_dirs(),
            download_url: Some(MICROSOFT_URL.to_string()),
            threads: None,
        }
    }
}

/// What `build` is doing, for progress display.
#[derive(Debug)]
pub enum Event<'a> {
    /// No archive was given and this one was found.
    Found { archive: &'a Path },
    /// Checking that the download host answers.
    Probing { url: &'a str },
    /// Download progress in bytes.
    Downloading { done: u64, total: Option<u64> },
    /// The archive is open and listed.
    Source {
        path: &'a Path,
        kind: SourceKind,
        scheme: Scheme,
        photos: usize,
        ignored: usize,
    },
    /// Photo checking and writing starts: `total` photos will be written.
    Start { total: usize },
    /// `done` photos written so far.
    Progress { done: usize },
    /// A corrupt photo was skipped.
    Skipped { file: &'a str, reason: &'a str },
}

/// Where the photos came from.
#[derive(Debug, Clone, Serialize)]
pub struct SourceSummary {
    pub path: PathBuf,
    pub kind: SourceKind,
    pub scheme: Scheme,
    /// Found in the search folders rather than given.
    pub located: bool,
    /// Downloaded by this run.
    pub downloaded: bool,
}

/// One class of one split.
#[derive(Debug, Clone, Serialize)]
pub struct ClassSummary {
    pub class: Class,
    pub folder: String,
    pub count: usize,
    pub first_id: Option<u64>,
    pub last_id: Option<u64>,
}

/// One output split.
#[derive(Debug, Clone, Serialize)]
pub struct SplitSummary {
    pub split: String,
    pub path: PathBuf,
    pub classes: Vec<ClassSummary>,
}

/// A photo left out because it is unusable.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Path inside the archive.
    pub file: String,
    pub class: Class,
    pub id: u64,
    pub reason: String,
}

/// The result of `build`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub out: PathBuf,
    pub source: SourceSummary,
    /// `copy` or `link`.
    pub mode: String,
    pub first_id: u64,
    pub counts: Counts,
    pub splits: Vec<SplitSummary>,
    pub skipped: Vec<Skipped>,
    /// Archive members that are not Dogs vs Cats photos (Thumbs.db, unlabelled test images, …).
    pub ignored_entries: usize,
    pub seconds: f64,
}

/// Builds the layout (see the module docs). Nothing in `out` changes unless every split was written.
// Over 80 lines: the layout is staged and committed in one scope so that nothing in `out` changes
// on an error.
pub fn build(cfg: &Config, on_event: &mut dyn FnMut(Event)) -> Result<Summary> {
    let started = Instant::now();
    let counts = cfg.counts;
    if counts.per_class() == 0 {
        return Err(Error::Invalid(
            "all split sizes are 0: ask for at least one photo per class".into(),
        ));
    }
    let wanted: Vec<(&str, usize)> = counts
        .splits()
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .collect();
    check_out(cfg, &wanted)?;

    let (archive, located, downloaded) = resolve_archive(cfg, on_event)?;
    let mut source = Source::open(&archive, std::slice::from_ref(&cfg.out))?;
    if cfg.link && source.kind() != SourceKind::Folder {
        return Err(Error::Invalid(format!(
            "--link needs an extracted folder, but {} is a zip file: unzip it first or drop --link",
            archive.display()
        )));
    }
    let listing = source.list()?;
    on_event(Event::Source {
        path: &archive,
        kind: source.kind(),
        scheme: listing.scheme(),
        photos: listing.photos.len(),
        ignored: listing.ignored,
    });

    let tmp = TempDir::create(cfg.out.join(format!(".tmp-data-{}", std::process::id())))?;
    for (split, _) in &wanted {
        for class in Class::ALL {
            let dir = tmp.path.join(split).join(class.folder());
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
    }

    let need = counts.per_class();
    let threads = cfg
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    on_event(Event::Start { total: need * 2 });
    let mut copy = Copying {
        cfg,
        archive: &archive,
        source: &mut source,
        tmp: &tmp.path,
        wanted: &wanted,
        threads,
        done: 0,
        skipped: Vec::new(),
    };
    let mut ids: Vec<(Class, &'static str, Vec<u64>)> = Vec::new();
    for class in Class::ALL {
        for (split, list) in copy.take_class(&listing, class, on_event)? {
            ids.push((class, split, list));
        }
    }
    let skipped = copy.skipped;

    commit(&tmp.path, &cfg.out, &wanted)?;
    Ok(Summary {
        out: cfg.out.clone(),
        source: SourceSummary {
            path: archive,
            kind: source.kind(),
            scheme: listing.scheme(),
            located,
            downloaded,
        },
        mode: if cfg.link { "link" } else { "copy" }.into(),
        first_id: cfg.first_id,
        counts,
        splits: split_summaries(&cfg.out, &wanted, &ids),
        skipped,
        ignored_entries: listing.ignored,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Copying (or linking) the photos of one class after another into the temporary layout.
struct Copying<'a> {
    cfg: &'a Config,
    archive: &'a Path,
    source: &'a mut Source,
    tmp: &'a Path,
    wanted: &'a [(&'static str, usize)],
    threads: usize,
    /// Photos placed so far (both classes), for progress.
    done: usize,
    skipped: Vec<Skipped>,
}

impl Copying<'_> {
    /// Places the first `per_class` readable photos of `class` (by ascending ID from
    /// `first_id`) into their splits; returns the IDs each split got.
    fn take_class(
        &mut self,
        listing: &Listing,
        class: Class,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Vec<(&'static str, Vec<u64>)>> {
        let (cfg, need) = (self.cfg, self.cfg.counts.per_class());
        let candidates: Vec<&Photo> = listing
            .class(class)
            .filter(|p| p.id >= cfg.first_id)
            .collect();
        let mut per_split: Vec<(&'static str, Vec<u64>)> =
            self.wanted.iter().map(|&(s, _)| (s, Vec::new())).collect();
        let mut taken = 0usize;
        let mut next = 0usize;
        let mut class_skipped = 0usize;
        while taken < need {
            if next >= candidates.len() {
                return Err(Error::TooFew {
                    path: self.archive.to_path_buf(),
                    class: class.name().into(),
                    needed: need,
                    found: taken,
                    skipped: class_skipped,
                    first_id: cfg.first_id,
                });
            }
            // Check exactly as many as are still missing (at most 64 at a time), so no photo past the
            // last one needed is read.
            let chunk = &candidates[next..candidates.len().min(next + (need - taken).min(64))];
            next += chunk.len();
            let mut bytes = Vec::with_capacity(chunk.len());
            for photo in chunk {
                bytes.push(self.source.read(photo)?);
            }
            let verdicts = check_all(chunk, &bytes, self.threads);
            for ((photo, data), verdict) in chunk.iter().zip(&bytes).zip(verdicts) {
                if let Some(reason) = verdict {
                    on_event(Event::Skipped {
                        file: &photo.name,
                        reason: &reason,
                    });
                    self.skipped.push(Skipped {
                        file: photo.name.clone(),
                        class,
                        id: photo.id,
                        reason,
                    });
                    class_skipped += 1;
                    continue;
                }
                let split = cfg.counts.split_of(taken);
                self.place(photo, data, class, split)?;
                if let Some(entry) = per_split.iter_mut().find(|(s, _)| *s == split) {
                    entry.1.push(photo.id);
                }
                taken += 1;
                self.done += 1;
                on_event(Event::Progress { done: self.done });
            }
        }
        Ok(per_split)
    }

    /// Writes (or links) one checked photo as `<split>/<class folder>/<class>.<id>.jpg`.
    fn place(
        &self,
        photo: &Photo,
        data: &std::result::Result<Vec<u8>, String>,
        class: Class,
        split: &str,
    ) -> Result<()> {
        let dest = self.tmp.join(split).join(class.folder()).join(format!(
            "{}.{}.jpg",
            class.name(),
            photo.id
        ));
        match (self.cfg.link, photo.file(), data) {
            (true, Some(file), _) => link(file, &dest),
            (_, _, Ok(data)) => std::fs::write(&dest, data).map_err(|e| Error::io(&dest, e)),
            // Unreachable: unreadable members were given a reason above.
            (_, _, Err(reason)) => Err(Error::Invalid(format!("{}: {reason}", photo.name))),
        }
    }
}

/// What each split holds, per class.
fn split_summaries(
    out: &Path,
    wanted: &[(&str, usize)],
    ids: &[(Class, &str, Vec<u64>)],
) -> Vec<SplitSummary> {
    wanted
        .iter()
        .map(|&(split, _)| SplitSummary {
            split: split.into(),
            path: out.join(split),
            classes: ids
                .iter()
                .filter(|(_, s, _)| *s == split)
                .map(|(class, _, list)| ClassSummary {
                    class: *class,
                    folder: class.folder().into(),
                    count: list.len(),
                    first_id: list.first().copied(),
                    last_id: list.last().copied(),
                })
                .collect(),
        })
        .collect()
}

/// Refuses to touch existing splits without `force`, and an `out` that is a file.
fn check_out(cfg: &Config, wanted: &[(&str, usize)]) -> Result<()> {
    if cfg.out.exists() && !cfg.out.is_dir() {
        return Err(Error::Invalid(format!(
            "--out {} is a file, not a folder: choose another path",
            cfg.out.display()
        )));
    }
    let existing: Vec<String> = wanted
        .iter()
        .filter(|(s, _)| cfg.out.join(s).symlink_metadata().is_ok())
        .map(|(s, _)| format!("{s}/"))
        .collect();
    if !existing.is_empty() && !cfg.force {
        return Err(Error::Exists {
            out: cfg.out.clone(),
            names: existing,
        });
    }
    Ok(())
}

/// The archive to read: given, found, or downloaded. Returns (path, located, downloaded).
fn resolve_archive(cfg: &Config, on_event: &mut dyn FnMut(Event)) -> Result<(PathBuf, bool, bool)> {
    if let Some(a) = &cfg.archive {
        if !a.exists() {
            return Err(Error::NotFound(format!(
                "--archive {} does not exist: pass the path of Kaggle's train.zip, Microsoft's kagglecatsanddogs_*.zip, or the folder either was extracted to",
                a.display()
            )));
        }
        return Ok((a.clone(), false, false));
    }
    let mut dirs = cfg.search_dirs.clone();
    dirs.push(cfg.out.clone());
    if let Some(found) = locate::find_archive(&dirs) {
        on_event(Event::Found { archive: &found });
        return Ok((found, true, false));
    }
    let looked: Vec<String> = cfg
        .search_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let manual = format!(
        "download {MICROSOFT_URL} (Microsoft, about 786 MB) or train.zip from {KAGGLE_PAGE} (Kaggle, sign-in needed) \
         on a machine with internet, then run again with --archive PATH (the zip, or the folder it was extracted to)"
    );
    let not_found = format!(
        "no Dogs vs Cats archive given with --archive, and none found ({LOOKED_FOR} in {})",
        looked.join(", ")
    );
    let Some(url) = &cfg.download_url else {
        return Err(Error::NotFound(format!(
            "{not_found}; downloads are off: {manual}"
        )));
    };
    on_event(Event::Probing { url });
    if let Err(e) = download::probe(url) {
        return Err(Error::NotFound(format!(
            "{not_found}, and {} cannot be reached ({e}), so this machine looks offline: {manual}",
            download::host_port(url)
        )));
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let file = url
        .rsplit('/')
        .next()
        .filter(|n| n.ends_with(".zip"))
        .unwrap_or("kagglecatsanddogs.zip");
    let dest = cfg.out.join(format!(".{file}"));
    download::download(url, &dest, &mut |done, total| {
        on_event(Event::Downloading { done, total })
    })?;
    Ok((dest, false, true))
}

/// Decode-checks photos in parallel; `None` = usable, else the reason it is not.
fn check_all(
    photos: &[&Photo],
    bytes: &[std::result::Result<Vec<u8>, String>],
    threads: usize,
) -> Vec<Option<String>> {
    let check = |photo: &Photo, data: &std::result::Result<Vec<u8>, String>| match data {
        Err(reason) => Some(reason.clone()),
        Ok(data) => match features::image_io::decode_rgb8(data, Path::new(&photo.name)) {
            Ok(_) => None,
            Err(features::Error::Image { reason, .. }) => Some(reason),
            Err(e) => Some(e.to_string()),
        },
    };
    let per = photos.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = photos
            .chunks(per)
            .zip(bytes.chunks(per))
            .map(|(ps, bs)| {
                s.spawn(move || {
                    ps.iter()
                        .zip(bs)
                        .map(|(p, b)| check(p, b))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Some("decoder crashed".into()); per])
            })
            .collect()
    })
}

#[cfg(unix)]
fn link(file: &Path, dest: &Path) -> Result<()> {
    let target = std::fs::canonicalize(file).map_err(|e| Error::io(file, e))?;
    std::os::unix::fs::symlink(&target, dest).map_err(|e| Error::io(dest, e))
}

#[cfg(not(unix))]
fn link(file: &Path, _dest: &Path) -> Result<()> {
    Err(Error::Invalid(format!(
        "{}: --link is only supported on Unix; drop it to copy the photos",
        file.display()
    )))
}

/// Moves the finished splits from `tmp` into `out`, replacing old ones (only reached with --force).
fn commit(tmp: &Path, out: &Path, wanted: &[(&str, usize)]) -> Result<()> {
    let old = tmp.join(".old");
    for (split, _) in wanted {
        let dest = out.join(split);
        if dest.symlink_metadata().is_ok() {
            std::fs::create_dir_all(&old).map_err(|e| Error::io(&old, e))?;
            let aside = old.join(split);
            std::fs::rename(&dest, &aside).map_err(|e| Error::io(&dest, e))?;
        }
        let from = tmp.join(split);
        std::fs::rename(&from, &dest).map_err(|e| Error::io(&dest, e))?;
    }
    Ok(())
}

/// A scratch folder inside the output folder, removed (with anything set aside in it) when dropped.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn create(path: PathBuf) -> Result<Self> {
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
