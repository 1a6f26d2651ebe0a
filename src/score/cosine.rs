//! Streaming cosine statistics over hidden states: Block Influence per layer and the angular
//! distance between every pair of depths. Sums are kept in f64.

/// Cosine similarity of two rows, in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    (dot / (na.sqrt() * nb.sqrt())).clamp(-1.0, 1.0)
}

/// `arccos(cos(a, b)) / π`, in `[0, 1]`.
pub fn angular_distance(a: &[f32], b: &[f32]) -> f64 {
    cosine(a, b).acos() / std::f64::consts::PI
}

/// Block Influence: mean of `1 − cos(input, output)` per layer, over all tokens seen.
#[derive(Debug, Clone)]
pub struct BiAccumulator {
    sums: Vec<f64>,
    tokens: u64,
    /// Per-batch means, for the `minitron` variant.
    batch_sums: Vec<f64>,
    batch_tokens: u64,
    batches: Vec<Vec<f64>>,
}

impl BiAccumulator {
    pub fn new(n_layers: usize) -> Self {
        BiAccumulator {
            sums: vec![0.0; n_layers],
            tokens: 0,
            batch_sums: vec![0.0; n_layers],
            batch_tokens: 0,
            batches: Vec::new(),
        }
    }

    /// Adds one token: `states[ℓ]` is the input of layer ℓ, and `states[n_layers]` the output of
    /// the last layer before the final norm.
    pub fn add_token(&mut self, states: &[&[f32]]) {
        for (l, pair) in states.windows(2).enumerate().take(self.sums.len()) {
            let v = 1.0 - cosine(pair[0], pair[1]);
            self.sums[l] += v;
            self.batch_sums[l] += v;
        }
        self.tokens += 1;
        self.batch_tokens += 1;
    }

    /// Adds one layer's contribution for one token (for engines that see a layer at a time).
    pub fn add_layer_token(&mut self, layer: usize, input: &[f32], output: &[f32]) {
        let v = 1.0 - cosine(input, output);
        self.sums[layer] += v;
        self.batch_sums[layer] += v;
    }

    /// Counts tokens added with [`Self::add_layer_token`].
    pub fn count_tokens(&mut self, n: u64) {
        self.tokens += n;
        self.batch_tokens += n;
    }

    /// Ends a batch (for `minitron`).
    pub fn end_batch(&mut self) {
        if self.batch_tokens > 0 {
            self.batches.push(std::mem::replace(
                &mut self.batch_sums,
                vec![0.0; self.sums.len()],
            ));
            self.batch_tokens = 0;
        }
    }

    /// Adds `other`'s tokens, keeping them as one batch of their own.
    pub fn absorb(&mut self, mut other: BiAccumulator) {
        other.end_batch();
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            *a += b;
        }
        self.tokens += other.tokens;
        self.batches.extend(other.batches);
    }

    /// Mean BI per layer.
    pub fn bi(&self) -> Vec<f64> {
        let t = self.tokens.max(1) as f64;
        self.sums.iter().map(|s| s / t).collect()
    }

    /// ModelOpt's variant: per-batch sums, averaged over batches.
    pub fn minitron(&self) -> Vec<f64> {
        let n = self.batches.len().max(1) as f64;
        (0..self.sums.len())
            .map(|l| self.batches.iter().map(|b| b[l]).sum::<f64>() / n)
            .collect()
    }
}

/// Angular distances `d(ℓ, n)` for every start ℓ and block size `1 ≤ n ≤ max_n`.
#[derive(Debug, Clone)]
pub struct AngularAccumulator {
    n_layers: usize,
    max_n: usize,
    /// `sums[n-1][ℓ]`.
    sums: Vec<Vec<f64>>,
    count: u64,
}

impl AngularAccumulator {
    pub fn new(n_layers: usize, max_n: usize) -> Self {
        let max_n = max_n.clamp(1, n_layers);
        AngularAccumulator {
            n_layers,
            max_n,
            sums: (1..=max_n).map(|n| vec![0.0; n_layers + 1 - n]).collect(),
            count: 0,
        }
    }

    /// Adds one token's states: `states[ℓ]` is the input of layer ℓ, `states[n_layers]` the
    /// output of the last layer (before the final norm).
    pub fn add_token(&mut self, states: &[&[f32]]) {
        for n in 1..=self.max_n {
            for l in 0..=self.n_layers - n {
                self.sums[n - 1][l] += angular_distance(states[l], states[l + n]);
            }
        }
        self.count += 1;
    }

    /// The mean distances: `d[n-1][ℓ]`.
    pub fn distances(&self) -> Vec<Vec<f64>> {
        let c = self.count.max(1) as f64;
        self.sums
            .iter()
            .map(|row| row.iter().map(|s| s / c).collect())
            .collect()
    }

    pub fn max_n(&self) -> usize {
        self.max_n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_basics() {
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-12);
        assert!((angular_distance(&[1.0, 0.0], &[-1.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!((angular_distance(&[1.0, 0.0], &[0.0, 1.0]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn bi_and_angular_agree_for_single_layers() {
        let s0 = [1.0f32, 0.0, 0.0];
        let s1 = [1.0f32, 1.0, 0.0];
        let s2 = [0.0f32, 1.0, 0.0];
        let states: Vec<&[f32]> = vec![&s0, &s1, &s2];
        let mut bi = BiAccumulator::new(2);
        bi.add_token(&states);
        let mut ang = AngularAccumulator::new(2, 2);
        ang.add_token(&states);
        let d = ang.distances();
        let b = bi.bi();
        for l in 0..2 {
            let from_bi = (1.0 - b[l]).acos() / std::f64::consts::PI;
            assert!((from_bi - d[0][l]).abs() < 1e-12);
        }
        assert!((d[1][0] - 0.5).abs() < 1e-12);
        assert!((d[0][0] - 0.25).abs() < 1e-12);
    }
}
