//! Rotary position embeddings in the HF half-split layout (the first and second halves of each
//! head are rotated as pairs). Frequencies follow transformers' arithmetic, in f32, so positions
//! match the reference to the last bit where they can.

use super::config::RopeScaling;
use crate::error::Result;
use candle_core::{Device, Tensor};

/// The inverse frequencies of one model's RoPE.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    /// LongRoPE: the frequencies past `original` positions, and the cos/sin scale.
    long: Option<(Vec<f32>, usize, f32)>,
}

impl Rope {
    /// Frequencies for heads of `head_dim` with base `theta`, scaled as the config says.
    /// (`head_dim` is the rotated width: less than the head under a partial rotary factor.)
    pub fn new(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Self {
        let half = head_dim / 2;
        let powers = (0..half).map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            theta.powf(exponent as f64) as f32
        });
        if let RopeScaling::LongRope(l) = scaling {
            // transformers: `1 / (ext_factors * base ** (2i / dim))`, all in f32.
            let by = |factors: &[f64]| -> Vec<f32> {
                powers
                    .clone()
                    .zip(factors)
                    .map(|(p, &f)| 1.0f32 / (f as f32 * p))
                    .collect()
            };
            return Rope {
                inv_freq: by(&l.short_factor),
                long: Some((
                    by(&l.long_factor),
                    l.original_max_position_embeddings,
                    l.attention_factor as f32,
                )),
            };
        }
        let inv_freq = powers.map(|p| scale(1.0f32 / p, scaling)).collect();
        Rope {
            inv_freq,
            long: None,
        }
    }

    /// Whether attention scores depend on positions only through their distances, so that a
    /// sequence shifted right (left padding) scores as it does alone: not under LongRoPE, whose
    /// frequencies change with the forward's last position.
    pub fn shift_invariant(&self) -> bool {
        self.long.is_none()
    }

    /// The inverse frequencies, one per rotated pair.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// `(cos, sin)`, each `(len, head_dim / 2)`, for positions `offset..offset + len`. Under
    /// LongRoPE the whole forward takes the long frequencies once `offset + len` passes the
    /// original context, as transformers decides per forward.
    pub fn cos_sin(&self, offset: usize, len: usize) -> Result<(Tensor, Tensor)> {
        let (inv_freq, mul) = match &self.long {
            Some((long, original, factor)) if offset + len > *original => (long, *factor),
            Some((_, _, factor)) => (&self.inv_freq, *factor),
            None => (&self.inv_freq, 1.0),
        };
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for pos in offset..offset + len {
            for &f in inv_freq {
                let angle = (f * pos as f32) as f64;
                cos.push(angle.cos() as f32 * mul);
                sin.push(angle.sin() as f32 * mul);
            }
        }
        Ok((
            Tensor::from_vec(cos, (len, half), &Device::Cpu)?,
            Tensor::from_vec(sin, (len, half), &Device::Cpu)?,
        ))
    }
}

/// Applies a scaling rule to one inverse frequency.
fn scale(inv_freq: f32, scaling: &RopeScaling) -> f32 {
    match *scaling {
        RopeScaling::Default | RopeScaling::LongRope(_) => inv_freq,
        RopeScaling::Linear { factor } => (inv_freq as f64 / factor) as f32,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old_len,
        } => {
            let f = inv_freq as f64;
            let wavelen = 2.0 * std::f64::consts::PI / f;
            let low_freq_wavelen = old_len / low_freq_factor;
            let high_freq_wavelen = old_len / high_freq_factor;
            let out = if wavelen > low_freq_wavelen {
                f / factor
            } else if wavelen < high_freq_wavelen {
                f
            } else {
                let smooth =
                    (old_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 - smooth) * f / factor + smooth * f
            };
            out as f32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_frequencies() {
        let r = Rope::new(8, 10000.0, &RopeScaling::Default);
        let want = [1.0, 0.1, 0.01, 0.001];
        for (a, b) in r.inv_freq().iter().zip(want) {
            assert!((a - b).abs() < 1e-6 * b.max(1e-3), "{a} vs {b}");
        }
    }

    #[test]
    fn llama3_scales_only_low_frequencies() {
        let s = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0,
        };
        let plain = Rope::new(8, 10000.0, &RopeScaling::Default);
        let scaled = Rope::new(8, 10000.0, &s);
        let (p, q) = (plain.inv_freq(), scaled.inv_freq());
        assert_eq!(p[0], q[0], "wavelength 6.3 < 16 stays");
        assert!(
            q[1] < p[1] && q[1] > p[1] / 8.0,
            "wavelength 63 is smoothed"
        );
        assert!(
            (q[3] - p[3] / 8.0).abs() < 1e-9,
            "wavelength 6283 > 64 is divided"
        );
    }

    #[test]
    fn position_zero_is_identity() {
        let r = Rope::new(4, 10000.0, &RopeScaling::Default);
        let (c, s) = r.cos_sin(0, 2).unwrap();
        let c = c.to_vec2::<f32>().unwrap();
        let s = s.to_vec2::<f32>().unwrap();
        assert_eq!(c[0], vec![1.0, 1.0]);
        assert_eq!(s[0], vec![0.0, 0.0]);
        assert!((c[1][0] - 1f32.cos()).abs() < 1e-7);
    }
}
