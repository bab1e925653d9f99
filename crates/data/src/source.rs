//! Archive sources: a zip file or an extracted folder, listed as (class, ID) photos under Kaggle's
//! (`train/cat.N.jpg`) or Microsoft's (`PetImages/Cat/N.jpg`) naming, and read one photo at a time.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Error, Result};

/// Largest archive member read as a photo; bigger ones are reported as skipped.
pub const MAX_PHOTO_BYTES: u64 = 64 << 20;

/// Deepest folder level searched inside an extracted archive.
const MAX_DEPTH: usize = 6;

/// The two classes of Dogs vs Cats, in label order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Cat,
    Dog,
}

impl Class {
    pub const ALL: [Class; 2] = [Class::Cat, Class::Dog];

    /// `cat` / `dog`, the prefix of the output file names.
    pub fn name(self) -> &'static str {
        match self {
            Class::Cat => "cat",
            Class::Dog => "dog",
        }
    }

    /// `cats` / `dogs`, the class folder of the tutorial layout.
    pub fn folder(self) -> &'static str {
        match self {
            Class::Cat => "cats",
            Class::Dog => "dogs",
        }
    }
}

/// How the archive names its photos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Kaggle competition `train.zip`: `train/cat.N.jpg`, `train/dog.N.jpg`.
    Kaggle,
    /// Microsoft `kagglecatsanddogs_*.zip`: `PetImages/Cat/N.jpg`, `PetImages/Dog/N.jpg`.
    Microsoft,
}

/// A zip file or an extracted folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Zip,
    Folder,
}

/// One candidate photo of the archive.
#[derive(Debug, Clone)]
pub struct Photo {
    pub class: Class,
    pub id: u64,
    /// Path inside the archive (`/`-separated), as reported to the user.
    pub name: String,
    loc: Loc,
}

impl Photo {
    /// The file on disk when the source is an extracted folder.
    pub fn file(&self) -> Option<&Path> {
        match &self.loc {
            Loc::File(p) => Some(p),
            Loc::Zip(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Loc {
    Zip(usize),
    File(PathBuf),
}

/// What an archive holds.
#[derive(Debug, Default)]
pub struct Listing {
    /// Photos sorted by class, then ID; one per (class, ID).
    pub photos: Vec<Photo>,
    /// Members that are not Dogs vs Cats photos (`Thumbs.db`, `__MACOSX/…`, Kaggle's unlabelled `test1/N.jpg`, duplicates).
    pub ignored: usize,
    pub kaggle: usize,
    pub microsoft: usize,
}

impl Listing {
    /// The naming scheme most photos follow.
    pub fn scheme(&self) -> Scheme {
        if self.microsoft > self.kaggle {
            Scheme::Microsoft
        } else {
            Scheme::Kaggle
        }
    }

    /// This class's photos, by ascending ID.
    pub fn class(&self, class: Class) -> impl Iterator<Item = &Photo> {
        self.photos.iter().filter(move |p| p.class == class)
    }
}

/// Recognises a Dogs vs Cats photo from its `/`-separated path: `…/cat.12.jpg` (Kaggle) or `…/Cat/12.jpg` (Microsoft).
pub fn classify(path: &str) -> Option<(Class, u64, Scheme)> {
    let mut parts = path.rsplit('/').filter(|s| !s.is_empty());
    let file = parts.next()?.to_ascii_lowercase();
    let parent = parts.next().map(str::to_ascii_lowercase);
    if path.split('/').any(|c| c == "__MACOSX") {
        return None;
    }
    let stem = file.strip_suffix(".jpg")?;
    let digits = |s: &str| -> Option<u64> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    for class in Class::ALL {
        if let Some(rest) = stem
            .strip_prefix(class.name())
            .and_then(|r| r.strip_prefix('.'))
        {
            return digits(rest).map(|id| (class, id, Scheme::Kaggle));
        }
        if parent.as_deref() == Some(class.name()) {
            return digits(stem).map(|id| (class, id, Scheme::Microsoft));
        }
    }
    None
}

/// An open archive.
pub struct Source {
    path: PathBuf,
    kind: SourceKind,
    zip: Option<zip::ZipArchive<File>>,
    /// Folders never searched (the output folder, when it lies inside an extracted archive).
    exclude: Vec<PathBuf>,
}

impl Source {
    /// Opens a zip file or an extracted folder; `exclude` lists folders not to search.
    pub fn open(path: &Path, exclude: &[PathBuf]) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Ok(Source {
                path: path.to_path_buf(),
                kind: SourceKind::Folder,
                zip: None,
                exclude: exclude
                    .iter()
                    .filter_map(|p| std::fs::canonicalize(p).ok())
                    .collect(),
            });
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let zip = zip::ZipArchive::new(file).map_err(|e| Error::Zip {
            path: path.to_path_buf(),
            reason: format!(
                "not a readable zip file ({e}): re-download it, or unzip it and pass the folder"
            ),
        })?;
        Ok(Source {
            path: path.to_path_buf(),
            kind: SourceKind::Zip,
            zip: Some(zip),
            exclude: Vec::new(),
        })
    }

    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// Lists the photos; fails when there are none under either naming scheme.
    pub fn list(&mut self) -> Result<Listing> {
        let mut names: Vec<(String, Loc)> = Vec::new();
        let mut others = 0usize;
        match &mut self.zip {
            Some(zip) => {
                for i in 0..zip.len() {
                    let entry = zip.by_index_raw(i).map_err(|e| Error::Zip {
                        path: self.path.clone(),
                        reason: format!("member {i} unreadable ({e}): re-download the archive"),
                    })?;
                    if entry.is_dir() {
                        continue;
                    }
                    // Names only serve to recognise photos (never as paths to write), so lossy is fine.
                    let name = String::from_utf8_lossy(entry.name_raw()).replace('\\', "/");
                    names.push((name, Loc::Zip(i)));
                }
            }
            None => walk(&self.path, "", 0, &self.exclude, &mut names)?,
        }
        let mut listing = Listing::default();
        let mut nested = None;
        for (name, loc) in names {
            match classify(&name) {
                Some((class, id, scheme)) => {
                    match scheme {
                        Scheme::Kaggle => listing.kaggle += 1,
                        Scheme::Microsoft => listing.microsoft += 1,
                    }
                    listing.photos.push(Photo {
                        class,
                        id,
                        name,
                        loc,
                    });
                }
                None => {
                    if name.to_ascii_lowercase().ends_with("train.zip") {
                        nested = Some(name);
                    }
                    others += 1;
                }
            }
        }
        listing
            .photos
            .sort_by(|a, b| (a.class, a.id, &a.name).cmp(&(b.class, b.id, &b.name)));
        let before = listing.photos.len();
        listing
            .photos
            .dedup_by(|b, a| a.class == b.class && a.id == b.id);
        listing.ignored = others + (before - listing.photos.len());
        if listing.photos.is_empty() {
            let reason = match nested {
                Some(inner) => format!(
                    "this is Kaggle's competition bundle: extract {inner} from it and pass that file with --archive"
                ),
                None => "no Dogs vs Cats photos found (expected train/cat.N.jpg and train/dog.N.jpg from Kaggle's train.zip, \
                         or PetImages/Cat/N.jpg and PetImages/Dog/N.jpg from Microsoft's kagglecatsanddogs zip)"
                    .to_string(),
            };
            return Err(Error::Archive {
                path: self.path.clone(),
                reason,
            });
        }
        Ok(listing)
    }

    /// Reads one photo's bytes; `Ok(Err(reason))` when the member itself is unusable (too large).
    pub fn read(&mut self, photo: &Photo) -> Result<std::result::Result<Vec<u8>, String>> {
        let too_large = |n: u64| {
            format!(
                "{n} bytes, larger than the {} MiB a photo may have",
                MAX_PHOTO_BYTES >> 20
            )
        };
        match (&photo.loc, &mut self.zip) {
            (Loc::Zip(i), Some(zip)) => {
                let zerr = |e: &dyn std::fmt::Display| Error::Zip {
                    path: self.path.clone(),
                    reason: format!("{}: {e}: re-download the archive", photo.name),
                };
                let entry = zip.by_index(*i).map_err(|e| zerr(&e))?;
                if entry.size() > MAX_PHOTO_BYTES {
                    return Ok(Err(too_large(entry.size())));
                }
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                match entry.take(MAX_PHOTO_BYTES + 1).read_to_end(&mut bytes) {
                    Ok(_) => Ok(Ok(bytes)),
                    // A member whose compressed data is damaged is a corrupt photo, not a fatal error.
                    Err(e) => Ok(Err(format!("cannot be unpacked from the zip ({e})"))),
                }
            }
            (Loc::File(p), _) => {
                let len = std::fs::metadata(p).map_err(|e| Error::io(p, e))?.len();
                if len > MAX_PHOTO_BYTES {
                    return Ok(Err(too_large(len)));
                }
                std::fs::read(p).map(Ok).map_err(|e| Error::io(p, e))
            }
            (Loc::Zip(_), None) => Err(Error::Invalid(format!(
                "{}: photo listed from another source",
                photo.name
            ))),
        }
    }
}

/// Collects the files under `dir` (hidden entries, `exclude`d folders and deeper levels skipped).
fn walk(
    dir: &Path,
    rel: &str,
    depth: usize,
    exclude: &[PathBuf],
    out: &mut Vec<(String, Loc)>,
) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            let skip = depth + 1 > MAX_DEPTH
                || std::fs::canonicalize(&path)
                    .map(|c| exclude.contains(&c))
                    .unwrap_or(false);
            if !skip {
                walk(&path, &child, depth + 1, exclude, out)?;
            }
        } else if meta.is_file() {
            out.push((child, Loc::File(path)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_both_schemes() {
        assert_eq!(
            classify("train/cat.12.jpg"),
            Some((Class::Cat, 12, Scheme::Kaggle))
        );
        assert_eq!(classify("dog.0.jpg"), Some((Class::Dog, 0, Scheme::Kaggle)));
        assert_eq!(
            classify("PetImages/Dog/11702.jpg"),
            Some((Class::Dog, 11702, Scheme::Microsoft))
        );
        assert_eq!(
            classify("x/PetImages/Cat/666.jpg"),
            Some((Class::Cat, 666, Scheme::Microsoft))
        );
        for other in [
            "PetImages/Cat/Thumbs.db",
            "test1/12.jpg",
            "__MACOSX/train/._cat.1.jpg",
            "__MACOSX/PetImages/Cat/1.jpg",
            "train/cat.x.jpg",
            "train/cat.1.png",
            "train/cow.1.jpg",
            "PetImages/Cat/-1.jpg",
        ] {
            assert_eq!(classify(other), None, "{other}");
        }
    }
}
