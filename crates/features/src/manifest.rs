//! Backbone manifests (`models/*.toml`, compiled in) and resolving `--model` to ONNX bytes: a manifest name
//! downloaded through the hf-hub cache (offline aware), or a local `.onnx` file recognised by its sha256.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::preprocess::{Preprocess, Resize};
use crate::{Error, Result};

/// The manifests shipped with the binary.
const BUILTIN: &[&str] = &[
    include_str!("../../../models/vgg16.toml"),
    include_str!("../../../models/vgg16-keras.toml"),
    include_str!("../../../models/mobilenet-v2.toml"),
    include_str!("../../../models/efficientnet-lite0.toml"),
    include_str!("../../../models/efficientnet-lite2.toml"),
    include_str!("../../../models/efficientnet-lite0+lite2.toml"),
];

/// Where a hub model lives.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct HubSource {
    pub repo: String,
    pub file: String,
    #[serde(default = "main_rev")]
    pub revision: String,
}

fn main_rev() -> String {
    "main".into()
}

/// One backbone description.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub preprocess: Preprocess,
    /// Feature tensor, or `auto` for the last MaxPool before the classifier.
    #[serde(default = "auto")]
    pub features: String,
    /// A combination: the built-in backbones whose features are concatenated, in order (each cut at
    /// its own `features`, fed the same photo at its own `size`); the combination has no file of its own.
    #[serde(default)]
    pub parts: Vec<String>,
    /// Input of the top block that fine-tuning trains.
    #[serde(default)]
    pub trainable_from: Option<String>,
    /// Whether `fit` fine-tunes that block by default (`false`: `fit` stops at the calibrated head,
    /// because fine-tuning gained too little for its cost; `bottleneck finetune` still can).
    #[serde(default = "yes")]
    pub fit_finetunes: bool,
    /// Whether the frozen part of fine-tuning runs in int8 on the CPU by default (where it measured
    /// faster at the same accuracy); otherwise FP32.
    #[serde(default)]
    pub frozen_int8: bool,
    /// The input side the weights were trained at (used when no `--size` is given).
    #[serde(default)]
    pub size: Option<u32>,
    /// How photos are resized to the input (used when no `--resize` is given), e.g.
    /// `bilinear-crop` (shorter side + centre crop) or `nearest` (squashed, as Keras).
    #[serde(default)]
    pub resize: Option<Resize>,
    /// sha256 of the ONNX file; empty when not pinned.
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub hub: Option<HubSource>,
    /// Paths relative to the workspace root where the file may already be.
    #[serde(default)]
    pub local: Vec<String>,
}

fn yes() -> bool {
    true
}

fn auto() -> String {
    "auto".into()
}

/// Parses the built-in manifests.
pub fn builtin() -> Result<Vec<Manifest>> {
    BUILTIN
        .iter()
        .map(|s| toml::from_str(s).map_err(|e| Error::Manifest(format!("built-in manifest: {e}"))))
        .collect()
}

/// Hugging Face hub settings.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// Cache folder (default: `$HF_HOME/hub` or `~/.cache/huggingface/hub`).
    pub cache_dir: Option<PathBuf>,
    /// Never touch the network (also set by `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Hub endpoint (default `HF_ENDPOINT` or the public hub).
    pub endpoint: Option<String>,
    /// Where int8 models quantized by any run are kept for every other run of the same model and
    /// calibration photos (default: `$BOTTLENECK_CACHE/int8`, else `$XDG_CACHE_HOME/bottleneck/int8`
    /// or `~/.cache/bottleneck/int8`; `BOTTLENECK_CACHE=off` disables it).
    pub int8_cache: Option<PathBuf>,
    /// A user's manifest file (`--manifest`) for a local model file: it takes the place of the
    /// built-in manifests for that file.
    pub manifest: Option<PathBuf>,
}

impl HubOptions {
    /// Settings from the environment (`HF_HOME`, `HF_HUB_OFFLINE`, `HF_ENDPOINT`).
    pub fn from_env() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
            .unwrap_or(false);
        HubOptions {
            cache_dir: None,
            offline,
            endpoint: std::env::var("HF_ENDPOINT").ok(),
            int8_cache: shared_cache_dir().map(|d| d.join("int8")),
            manifest: None,
        }
    }

    fn cache(&self) -> hf_hub::Cache {
        match &self.cache_dir {
            Some(d) => hf_hub::Cache::new(d.clone()),
            None => hf_hub::Cache::from_env(),
        }
    }
}

/// bottleneck's folder for caches shared by all runs: `$BOTTLENECK_CACHE` (`off` or empty: none),
/// else `$XDG_CACHE_HOME/bottleneck`, else `~/.cache/bottleneck`.
pub fn shared_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(v) = std::env::var_os("BOTTLENECK_CACHE") {
        return (!v.is_empty() && v != "off").then(|| PathBuf::from(v));
    }
    var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("bottleneck"))
}

/// A model ready to use: where it is, its bytes, its checksum and (when known) its manifest.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// What the user passed: a manifest name, or the absolute path of a model file.
    pub name: String,
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub manifest: Option<Manifest>,
}

pub use runfs::digest::sha256_hex;

/// The manifest `--model` gets, if any, without loading the model: the user's (`--manifest`), a
/// built-in manifest by name, or the one whose sha256 a local file has. For the defaults a manifest gives (`size`, `resize`)
/// before a stage starts; [`resolve`] reports what is wrong with a model that has none.
pub fn find(model: &str, hub: &HubOptions) -> Option<Manifest> {
    if let Some(path) = &hub.manifest {
        return read_file(path).ok();
    }
    let manifests = builtin().ok()?;
    let as_path = Path::new(model);
    if as_path.is_file() {
        let sha256 = runfs::sha256_file(as_path).ok()?;
        return manifests
            .into_iter()
            .find(|m| !m.sha256.is_empty() && m.sha256 == sha256);
    }
    manifests.into_iter().find(|m| m.name == model)
}

/// Reads a user's manifest file (`--manifest`): every field is checked, an unknown or missing one
/// is named.
pub fn read_file(path: &Path) -> Result<Manifest> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let m: Manifest = toml::from_str(&text).map_err(|e| {
        Error::Manifest(format!(
            "{}: {}; see models/README.md for the fields",
            path.display(),
            e.to_string().trim_end()
        ))
    })?;
    if m.features.trim().is_empty() {
        return Err(Error::Manifest(format!(
            "{}: field `features` is empty: name the tensor to cut the features at (or \"auto\")",
            path.display()
        )));
    }
    Ok(m)
}

/// Resolves `--model`: an existing file path, or the name of a built-in manifest. With a user's
/// manifest (`hub.manifest`), the model must be a local file, and its sha256 must match the
/// manifest's when the manifest pins one.
pub fn resolve(model: &str, hub: &HubOptions) -> Result<ResolvedModel> {
    if let Some(path) = &hub.manifest {
        let m = read_file(path)?;
        let as_path = Path::new(model);
        if !as_path.is_file() {
            return Err(Error::Manifest(format!(
                "--manifest {} describes a local model file, but --model {model} is not one: pass --model path/to/model.onnx",
                path.display()
            )));
        }
        let abs = std::fs::canonicalize(as_path).map_err(|e| Error::io(as_path, e))?;
        let mut r = load_local(&abs.to_string_lossy(), &abs, &[])?;
        if !m.sha256.is_empty() && m.sha256 != r.sha256 {
            return Err(Error::Manifest(format!(
                "{}: sha256 {} does not match {} (sha256 {}): fix the manifest's sha256 or pass the file it describes",
                path.display(),
                m.sha256,
                abs.display(),
                r.sha256
            )));
        }
        r.manifest = Some(m);
        return Ok(r);
    }
    let manifests = builtin()?;
    let as_path = Path::new(model);
    if as_path.is_file() {
        // Recorded in features and heads: absolute, so later stages find it from any folder.
        let abs = std::fs::canonicalize(as_path).map_err(|e| Error::io(as_path, e))?;
        return load_local(&abs.to_string_lossy(), &abs, &manifests);
    }
    if let Some(m) = manifests.iter().find(|m| m.name == model) {
        if !m.parts.is_empty() {
            return combination(m, &manifests, hub);
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for rel in &m.local {
            let p = workspace.join(rel);
            if p.is_file() {
                return load_local(model, &p, &manifests);
            }
        }
        let Some(src) = &m.hub else {
            return Err(Error::Manifest(format!(
                "model '{model}' has no download source and none of its local paths exist ({}): pass --model /path/to/the.onnx",
                m.local.join(", ")
            )));
        };
        let path = fetch(src, hub)?;
        let mut r = load_local(model, &path, &manifests)?;
        if !m.sha256.is_empty() && r.sha256 != m.sha256 {
            return Err(Error::Manifest(format!(
                "{} has sha256 {} but manifest '{}' pins {}: the download is corrupt or the repo changed; delete it from the cache and retry",
                path.display(),
                r.sha256,
                m.name,
                m.sha256
            )));
        }
        r.manifest = Some(m.clone());
        return Ok(r);
    }
    if model.ends_with(".onnx") || model.contains('/') {
        return Err(Error::Manifest(format!(
            "model file {model} does not exist"
        )));
    }
    Err(Error::Manifest(format!(
        "unknown model '{model}': use a local .onnx path or one of: {}",
        manifests
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// A manifest with `parts`: each part resolved by its name, then the parts side by side in one graph
/// ([`crate::onnx::side_by_side`]), checked against the manifest's sha256 when it pins one.
fn combination(m: &Manifest, manifests: &[Manifest], hub: &HubOptions) -> Result<ResolvedModel> {
    let wrong = |what: String| Error::Manifest(format!("manifest '{}': {what}", m.name));
    let size = m
        .size
        .ok_or_else(|| wrong("a combination needs `size` (the side of its one input)".into()))?;
    let mut resolved = Vec::new();
    for name in &m.parts {
        let part = manifests
            .iter()
            .find(|p| &p.name == name)
            .ok_or_else(|| wrong(format!("part '{name}' is not a built-in model")))?;
        if !part.parts.is_empty() {
            return Err(wrong(format!("part '{name}' is itself a combination")));
        }
        if part.preprocess != m.preprocess {
            return Err(wrong(format!(
                "part '{name}' wants preprocessing {}, the combination {}: the parts share one input",
                part.preprocess.name(),
                m.preprocess.name()
            )));
        }
        resolved.push((resolve(name, hub)?, part));
    }
    let parts: Vec<crate::onnx::Part<'_>> = resolved
        .iter()
        .map(|(r, p)| crate::onnx::Part {
            name: &p.name,
            bytes: &r.bytes,
            features: &p.features,
            size: p.size.unwrap_or(size),
        })
        .collect();
    let path = PathBuf::from(format!("models/{}.toml", m.name));
    let bytes = crate::onnx::side_by_side(&parts, size, &m.features).map_err(|e| Error::Model {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let sha256 = sha256_hex(&bytes);
    if !m.sha256.is_empty() && m.sha256 != sha256 {
        return Err(wrong(format!(
            "its parts combine to sha256 {sha256}, the manifest pins {}: a part changed",
            m.sha256
        )));
    }
    Ok(ResolvedModel {
        name: m.name.clone(),
        path,
        bytes,
        sha256,
        manifest: Some(m.clone()),
    })
}

fn load_local(name: &str, path: &Path, manifests: &[Manifest]) -> Result<ResolvedModel> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    crate::onnx::refuse_external_data(&bytes, path)?;
    let sha256 = sha256_hex(&bytes);
    let manifest = manifests
        .iter()
        .find(|m| !m.sha256.is_empty() && m.sha256 == sha256)
        .cloned();
    Ok(ResolvedModel {
        name: name.to_string(),
        path: path.to_path_buf(),
        bytes,
        sha256,
        manifest,
    })
}

/// Gets a hub file through the hf-hub cache; offline, only the cache is consulted.
pub fn fetch(src: &HubSource, hub: &HubOptions) -> Result<PathBuf> {
    let repo = hf_hub::Repo::with_revision(
        src.repo.clone(),
        hf_hub::RepoType::Model,
        src.revision.clone(),
    );
    let cache = hub.cache();
    if let Some(p) = cache.repo(repo.clone()).get(&src.file) {
        return Ok(p);
    }
    let manual = format!(
        "download {} from the repo {} (revision {}) yourself and pass --model /path/to/file.onnx, or place it in the Hugging Face cache at {}",
        src.file,
        src.repo,
        src.revision,
        cache.path().display()
    );
    if hub.offline {
        return Err(Error::Manifest(format!(
            "offline (HF_HUB_OFFLINE) and {}/{} is not in the Hugging Face cache: {manual}",
            src.repo, src.file
        )));
    }
    let endpoint = hub
        .endpoint
        .clone()
        .unwrap_or_else(|| "https://huggingface.co".into());
    probe(&endpoint).map_err(|e| {
        Error::Manifest(format!("cannot reach the Hugging Face hub at {endpoint} ({e}); this machine looks offline: {manual}"))
    })?;
    let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(cache)
        .with_progress(true)
        .with_retries(1);
    if let Some(e) = &hub.endpoint {
        builder = builder.with_endpoint(e.clone());
    }
    let api = builder
        .build()
        .map_err(|e| Error::Manifest(format!("Hugging Face client: {e}")))?;
    api.repo(repo).get(&src.file).map_err(|e| {
        Error::Manifest(format!(
            "could not download {}/{} from the Hugging Face hub ({e}); if this machine is offline, {manual}",
            src.repo, src.file
        ))
    })
}

/// Fails fast (5 s at most) when the endpoint's host cannot be resolved or connected to, so that an offline
/// machine gets a clear message instead of a hanging download.
fn probe(endpoint: &str) -> std::io::Result<()> {
    use std::net::{TcpStream, ToSocketAddrs};
    let rest = endpoint.split("://").nth(1).unwrap_or(endpoint);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let default_port = if endpoint.starts_with("http://") {
        80
    } else {
        443
    };
    let addr = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    };
    let timeout = std::time::Duration::from_secs(5);
    let mut last = std::io::Error::other("no address");
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}
