//! Likely mislabeled photos by confident learning (Northcutt et al., 2021; cleanlab's
//! `prune_by_noise_rate`) on the out-of-fold probabilities: a per-class threshold `t_j` = the mean
//! probability of class `j` over the photos labelled `j`; a photo labelled `i` whose probability
//! reaches `t_j` for some class `j` (the largest such) is counted in cell `(i, j)` of the confident
//! joint; each row of counts is scaled to the number of photos labelled `i`, which estimates how
//! many photos labelled `i` are really `j`; that many photos labelled `i` with the largest margin
//! `p_j − p_i` (and `p_j > p_i`) are flagged, ranked by how little probability their own label got.
//! Also the class pairs the out-of-fold predictions confuse most.

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

/// The confident joint: `[given, confident class]` counts over the scored rows.
fn confident_joint(rows: &Rows, t: &[f32]) -> Vec<Vec<usize>> {
    let k = rows.classes.len();
    let mut c = vec![vec![0usize; k]; k];
    for i in 0..rows.len() {
        let Some(p) = rows.probabilities(i) else {
            continue;
        };
        let confident = (0..k)
            .filter(|&j| p[j] >= t[j])
            .max_by(|&a, &b| p[a].total_cmp(&p[b]));
        if let Some(j) = confident {
            c[rows.labels[i] as usize][j] += 1;
        }
    }
    c
}

/// The flagged photos, most doubtful first.
pub fn mislabeled(rows: &Rows, t: &[f32]) -> Vec<Mislabeled> {
    let k = rows.classes.len();
    let joint = confident_joint(rows, t);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); k];
    for i in 0..rows.len() {
        if rows.probabilities(i).is_some() {
            by_class[rows.labels[i] as usize].push(i);
        }
    }
    let mut taken = vec![false; rows.len()];
    let mut out = Vec::new();
    for given in 0..k {
        let counted: usize = joint[given].iter().sum();
        if counted == 0 {
            continue;
        }
        let scale = by_class[given].len() as f64 / counted as f64;
        for j in (0..k).filter(|&j| j != given) {
            let m = (joint[given][j] as f64 * scale).round() as usize;
            let margin = |i: usize| rows.probabilities(i).map_or(0.0, |p| p[j] - p[given]);
            let mut pool: Vec<usize> = by_class[given]
                .iter()
                .copied()
                .filter(|&i| !taken[i] && margin(i) > 0.0)
                .collect();
            pool.sort_by(|&a, &b| margin(b).total_cmp(&margin(a)));
            for &i in pool.iter().take(m) {
                taken[i] = true;
                out.push(finding(rows, i, given, j));
            }
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.path.cmp(&b.path)));
    out
}

/// Row `i` (labelled `given`) flagged as looking like `j`.
fn finding(rows: &Rows, i: usize, given: usize, j: usize) -> Mislabeled {
    let p = rows.probabilities(i).unwrap_or(&[]);
    let at = |c: usize| p.get(c).copied().unwrap_or(0.0);
    Mislabeled {
        path: rows.files[i].clone(),
        split: rows.group_name(i).to_string(),
        given: rows.classes[given].clone(),
        suggested: rows.classes[j].clone(),
        given_probability: at(given),
        suggested_probability: at(j),
        score: 1.0 - at(given),
    }
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
