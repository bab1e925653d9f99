//! Uploads to network input: each image is decoded, framed and preprocessed exactly as `extract`
//! and `predict` do (`features::extract::prepare_bytes`, the same decode limits), on blocking
//! threads beside the engine's, at most `decode_threads` at once so memory stays bounded.

use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use features::infer::InputSpec;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::Problem;

/// Decodes uploads into input rows.
#[derive(Clone)]
pub(crate) struct Decoder {
    permits: Arc<Semaphore>,
    spec: InputSpec,
}

/// One uploaded image and the name it is answered under.
pub(crate) struct Upload {
    pub name: String,
    pub bytes: Bytes,
}

impl Decoder {
    pub fn new(spec: InputSpec, threads: usize) -> Self {
        Decoder {
            permits: Arc::new(Semaphore::new(threads)),
            spec,
        }
    }

    /// One input row of `upload`, or a 422 naming it and the reason.
    async fn prepare(&self, upload: Upload) -> Result<Vec<f32>, Problem> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Problem::unavailable("the server is shutting down"))?;
        let spec = self.spec;
        let per_image = 3 * spec.size as usize * spec.size as usize;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut slot = vec![0.0f32; per_image];
            features::extract::prepare_bytes(
                &upload.bytes,
                Path::new(&upload.name),
                &spec,
                &mut slot,
            )
            .map(|()| slot)
            .map_err(|e| Problem::unreadable(&upload.name, e))
        })
        .await
        .map_err(|e| Problem::internal(format!("decoding stopped: {e}")))?
    }

    /// Input rows of every upload, in order; the first unreadable one is the answer (nothing is
    /// classified from a request with a bad image).
    pub async fn prepare_all(&self, uploads: Vec<Upload>) -> Result<Vec<Vec<f32>>, Problem> {
        let mut set = JoinSet::new();
        let n = uploads.len();
        for (i, u) in uploads.into_iter().enumerate() {
            let me = self.clone();
            set.spawn(async move { (i, me.prepare(u).await) });
        }
        let mut rows: Vec<Option<Vec<f32>>> = vec![None; n];
        let mut first_bad: Option<(usize, Problem)> = None;
        while let Some(done) = set.join_next().await {
            let (i, r) = done.map_err(|e| Problem::internal(format!("decoding stopped: {e}")))?;
            match r {
                Ok(row) => rows[i] = Some(row),
                Err(p) if first_bad.as_ref().is_none_or(|(j, _)| i < *j) => {
                    first_bad = Some((i, p))
                }
                Err(_) => {}
            }
        }
        if let Some((_, p)) = first_bad {
            return Err(p);
        }
        Ok(rows.into_iter().flatten().collect())
    }
}
