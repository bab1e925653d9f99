//! Photos that belong to no class well, by the distance to their nearest training photos (the
//! k-nearest-neighbour rule of Sun et al., 2022, on unit-length embeddings): a photo whose
//! [`crate::dupes::NEIGHBOURS`]-th most similar training photo is still far — a car among cats — is out of
//! place. The distance is given in robust standard deviations of the training photos' own
//! distances (median and MAD), so one threshold reads the same on every backbone and data set.

use serde::{Deserialize, Serialize};

use crate::dupes::Nearest;
use crate::rows::{Group, Rows};

/// A photo far from every class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outlier {
    pub path: String,
    pub split: String,
    pub given: String,
    /// The class the out-of-fold model gives it (training photos), else its given class.
    pub nearest: String,
    /// Distance to its nearest training photos, in robust standard deviations above the median
    /// training photo's.
    pub score: f32,
    /// The largest out-of-fold probability, for training photos that have one.
    pub max_probability: Option<f32>,
}

fn median(v: &mut [f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

/// Every training photo scoring at least `min_score`, farthest first; `nearest` from
/// [`crate::dupes::nearest`]. (Validation photos are not listed: the audit cleans what is trained on.)
pub fn find(rows: &Rows, nearest: &[Nearest], min_score: f32) -> Vec<Outlier> {
    let dist: Vec<Option<f32>> = nearest.iter().map(|n| n.kth().map(|c| 1.0 - c)).collect();
    let mut train: Vec<f32> = (0..rows.len())
        .filter(|&i| rows.group[i] == Group::Train)
        .filter_map(|i| dist[i])
        .collect();
    let med = median(&mut train);
    let mut dev: Vec<f32> = train.iter().map(|d| (d - med).abs()).collect();
    let scale = (1.4826 * median(&mut dev)).max(1e-6);
    let mut out = Vec::new();
    for (i, d) in dist.iter().enumerate() {
        let Some(d) = d.filter(|_| rows.group[i] == Group::Train) else {
            continue;
        };
        let score = (d - med) / scale;
        if score < min_score {
            continue;
        }
        let p = rows.probabilities(i);
        let y = rows.labels[i] as usize;
        let believed = p
            .and_then(|p| (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])))
            .unwrap_or(y);
        out.push(Outlier {
            path: rows.files[i].clone(),
            split: rows.group_name(i).to_string(),
            given: rows.classes[y].clone(),
            nearest: rows.classes[believed].clone(),
            score,
            max_probability: p.map(|p| p.iter().fold(0f32, |m, &v| m.max(v))),
        });
    }
    out.sort_by(|p, q| q.score.total_cmp(&p.score).then(p.path.cmp(&q.path)));
    out
}
