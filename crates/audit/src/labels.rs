//! Likely mislabeled photos by confident learning (Northcutt et al., 2021) on the out-of-fold
//! probabilities: a per-class threshold `t_j` = the mean probability of class `j` over the photos
//! labelled `j`; a photo labelled `i` whose probability reaches `t_j` for some other class `j`
//! (the largest such, when several do) is counted in the off-diagonal of the confident joint and
//! flagged, ranked by how little probability its own label got. Also the class pairs the
//! out-of-fold predictions confuse most.

use serde::{Deserialize, Serialize};

use crate::rows::Rows;

/// A photo whose given class the out-of-fold model doubts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mislabeled {
    pub path: String,
    pub split: String,
    pub given: String,
    pub suggested: String,
    /// Out-of-fold probability of the given class, and of the suggested one.
    pub given_probability: f32,
    pub suggested_probability: f32,
    /// `1 − given_probability`: higher is more likely wrong.
    pub score: f32,
}

/// Two classes the out-of-fold predictions mix up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfusedPair {
    pub a: String,
    pub b: String,
    /// Photos labelled `a` predicted `b`, and the reverse.
    pub a_as_b: usize,
    pub b_as_a: usize,
    /// `(a_as_b + b_as_a) / (photos of a + photos of b)` among the scored photos.
    pub rate: f64,
}

/// The per-class thresholds `t_j` over the rows with out-of-fold probabilities (`NaN` for a class
/// without such rows).
pub fn thresholds(rows: &Rows) -> Vec<f32> {
    let k = rows.classes.len();
    let (mut sum, mut n) = (vec![0f64; k], vec![0usize; k]);
    for i in 0..rows.len() {
        if let Some(p) = rows.probabilities(i) {
            let y = rows.labels[i] as usize;
            sum[y] += p[y] as f64;
            n[y] += 1;
        }
    }
    sum.iter()
        .zip(&n)
        .map(|(&s, &c)| {
            if c == 0 {
                f32::NAN
            } else {
                (s / c as f64) as f32
            }
        })
        .collect()
}

/// The flagged photos, most doubtful first.
pub fn mislabeled(rows: &Rows, t: &[f32]) -> Vec<Mislabeled> {
    let mut out = Vec::new();
    for i in 0..rows.len() {
        let Some(p) = rows.probabilities(i) else {
            continue;
        };
        let y = rows.labels[i] as usize;
        let confident = (0..p.len())
            .filter(|&j| p[j] >= t[j])
            .max_by(|&a, &b| p[a].total_cmp(&p[b]));
        let Some(j) = confident.filter(|&j| j != y) else {
            continue;
        };
        out.push(Mislabeled {
            path: rows.files[i].clone(),
            split: rows.group_name(i).to_string(),
            given: rows.classes[y].clone(),
            suggested: rows.classes[j].clone(),
            given_probability: p[y],
            suggested_probability: p[j],
            score: 1.0 - p[y],
        });
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.path.cmp(&b.path)));
    out
}

/// Class pairs by how often the out-of-fold argmax swaps them, most confused first (pairs never
/// confused are left out).
pub fn confused_pairs(rows: &Rows) -> Vec<ConfusedPair> {
    let k = rows.classes.len();
    let mut m = vec![0usize; k * k];
    let mut per_class = vec![0usize; k];
    for i in 0..rows.len() {
        let Some(p) = rows.probabilities(i) else {
            continue;
        };
        let y = rows.labels[i] as usize;
        let pred = (0..k).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(y);
        m[y * k + pred] += 1;
        per_class[y] += 1;
    }
    let mut out = Vec::new();
    for a in 0..k {
        for b in a + 1..k {
            let (ab, ba) = (m[a * k + b], m[b * k + a]);
            if ab + ba == 0 {
                continue;
            }
            out.push(ConfusedPair {
                a: rows.classes[a].clone(),
                b: rows.classes[b].clone(),
                a_as_b: ab,
                b_as_a: ba,
                rate: (ab + ba) as f64 / (per_class[a] + per_class[b]).max(1) as f64,
            });
        }
    }
    out.sort_by(|x, y| {
        (y.a_as_b + y.b_as_a)
            .cmp(&(x.a_as_b + x.b_as_a))
            .then(y.rate.total_cmp(&x.rate))
    });
    out
}
