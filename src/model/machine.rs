//! What the machine is, as the speed figures need it stated (issue 34): the CPU's model and
//! the features the kernels use, its memory, each core's measured peak rate of f32 FMA, bf16
//! dot products and int8 dot products, and the kernels chosen on representative products.
//! `doctor` reports it; every benchmark prints its one-line summary.

use super::half_gemm::{self, HalfWeight};
use super::kernel::{self, KernelRecord};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The CPU features the kernels care about, as `/proc/cpuinfo` names them.
pub const FEATURES: [&str; 13] = [
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_bf16",
    "avx512_fp16",
    "avx512_vnni",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "neon",
];

/// The processor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// `model name` of `/proc/cpuinfo` (`unknown` where there is none).
    pub model: String,
    /// `vendor_id`, `cpu family` and `model` where the CPU reports them (x86).
    pub vendor: Option<String>,
    pub family: Option<u32>,
    pub model_number: Option<u32>,
    /// The cores this process may run on.
    pub cores: usize,
    /// Those of [`FEATURES`] it has.
    pub features: Vec<String>,
}

/// Peak rates of one core, measured on independent accumulators (so no instruction waits for
/// another): `None` where the CPU lacks the instruction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Peaks {
    /// f32 fused multiply-add, GFLOP/s (2 per multiply-add), on the widest vectors the CPU has.
    pub f32_gflops: Option<f64>,
    /// The vector width that rate was measured on, in bits (512 or 256).
    pub f32_bits: Option<u32>,
    /// bf16 pair dot products into f32 (`vdpbf16ps`), GFLOP/s.
    pub bf16_gflops: Option<f64>,
    /// u8 × i8 dot products into i32 (`vpdpbusd`, AVX512-VNNI), GOP/s (2 per multiply-add).
    pub int8_gops: Option<f64>,
}

/// Memory, from `/proc/meminfo`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub total_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
}

/// The CPU this process runs on.
pub fn cpu() -> Cpu {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
    };
    let flags = field("flags")
        .or_else(|| field("Features"))
        .unwrap_or_default();
    let has = |f: &str| {
        flags.split_whitespace().any(|x| x == f)
            || (f == "neon" && flags.split_whitespace().any(|x| x == "asimd"))
    };
    Cpu {
        model: field("model name").unwrap_or_else(|| "unknown".into()),
        vendor: field("vendor_id"),
        family: field("cpu family").and_then(|v| v.parse().ok()),
        model_number: field("model").and_then(|v| v.parse().ok()),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        features: FEATURES
            .iter()
            .filter(|f| has(f))
            .map(|f| f.to_string())
            .collect(),
    }
}

/// The memory of this machine.
pub fn memory() -> Memory {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    Memory {
        total_bytes: kib("MemTotal"),
        available_bytes: kib("MemAvailable"),
    }
}

/// Measures each peak on the calling thread for about `each` (at least a few million
/// instructions).
pub fn peaks(each: Duration) -> Peaks {
    #[cfg(target_arch = "x86_64")]
    {
        x86::peaks(each)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = each;
        Peaks {
            f32_gflops: None,
            f32_bits: None,
            bf16_gflops: None,
            int8_gops: None,
        }
    }
}

/// Runs `chunk` (which does `ops` operations) until `each` has passed, and gives the rate in
/// G operations per second of the fastest tenth of the time (a preempted chunk does not count).
fn rate(each: Duration, ops: f64, mut chunk: impl FnMut()) -> f64 {
    chunk(); // warm-up: clocks up, code paged in
    let start = Instant::now();
    let mut best = f64::MAX;
    while start.elapsed() < each {
        let t = Instant::now();
        chunk();
        best = best.min(t.elapsed().as_secs_f64());
    }
    ops / best.max(1e-12) / 1e9
}

/// Multiplies representative products of each kind through the kernel choice, so that each kind
/// is measured (or forced) and recorded, and returns the records: bf16 and f16 weights of
/// SmolLM2's MLP shape (576 → 1536) against 512 rows and against one, and ggml `q8_0` and
/// `q4_k` blocks (1536 → 576, which 256-value blocks divide) against 512 rows.
pub fn representative_kernels() -> crate::error::Result<Vec<KernelRecord>> {
    let (m, k, n) = (512, 576, 1536);
    let xs: Vec<f32> = (0..m * k)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 53 % 97) as f32 - 48.0) / 480.0)
        .collect();
    let wb: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
    let wh: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
    for rows in [m, 1] {
        half_gemm::matmul(&xs[..rows * k], rows, k, HalfWeight::Bf16(&wb), n);
        half_gemm::matmul(&xs[..rows * k], rows, k, HalfWeight::F16(&wh), n);
    }
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    // The same values as a (576, 1536) weight, against 512 rows of 1536.
    let wt = Tensor::from_vec(w, (k, n), &Device::Cpu)?;
    let xq: Vec<f32> = (0..m * n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    let x = Tensor::from_vec(xq, (m, n), &Device::Cpu)?;
    for dtype in [GgmlDType::Q8_0, GgmlDType::Q4K] {
        let q = QTensor::quantize(&wt, dtype)?;
        super::quantized::matmul(&x, &q)?;
    }
    Ok(kernel::report())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{rate, Peaks};
    use std::arch::x86_64::*;
    use std::hint::black_box;
    use std::time::Duration;

    /// Instructions per accumulator per chunk.
    const STEPS: usize = 1 << 14;
    /// Independent accumulators: enough to cover the latency of two pipes.
    const ACC: usize = 16;

    pub(super) fn peaks(each: Duration) -> Peaks {
        let ops = (STEPS * ACC) as f64;
        let avx512 = is_x86_feature_detected!("avx512f");
        let (f32_gflops, f32_bits) = if avx512 {
            // SAFETY: the CPU has AVX-512F.
            (
                Some(rate(each, ops * 32.0, || unsafe { fma512() })),
                Some(512),
            )
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            (
                Some(rate(each, ops * 16.0, || unsafe { fma256() })),
                Some(256),
            )
        } else {
            (None, None)
        };
        let bf16_gflops = (avx512 && is_x86_feature_detected!("avx512bf16"))
            // SAFETY: the CPU has AVX512-BF16.
            .then(|| rate(each, ops * 64.0, || unsafe { dpbf16() }));
        let int8_gops = (avx512 && is_x86_feature_detected!("avx512vnni"))
            // SAFETY: the CPU has AVX512-VNNI.
            .then(|| rate(each, ops * 128.0, || unsafe { dpbusd() }));
        Peaks {
            f32_gflops,
            f32_bits,
            bf16_gflops,
            int8_gops,
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn fma512() {
        let x = _mm512_set1_ps(black_box(1.0001));
        let y = _mm512_set1_ps(black_box(0.9999));
        let mut acc = [_mm512_setzero_ps(); ACC];
        for _ in 0..STEPS {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(x, y, *a);
            }
        }
        black_box(acc);
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma256() {
        let x = _mm256_set1_ps(black_box(1.0001));
        let y = _mm256_set1_ps(black_box(0.9999));
        // 16 registers: 12 accumulators and the two operands.
        let mut acc = [_mm256_setzero_ps(); 12];
        for _ in 0..STEPS * ACC / 12 {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(x, y, *a);
            }
        }
        black_box(acc);
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn dpbf16() {
        let one: __m512bh = std::mem::transmute(_mm512_set1_epi32(black_box(0x3f80_3f80)));
        let mut acc = [_mm512_setzero_ps(); ACC];
        for _ in 0..STEPS {
            for a in acc.iter_mut() {
                *a = _mm512_dpbf16_ps(*a, one, one);
            }
        }
        black_box(acc);
    }

    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn dpbusd() {
        let a8 = _mm512_set1_epi8(black_box(3));
        let b8 = _mm512_set1_epi8(black_box(-2));
        let mut acc = [_mm512_setzero_si512(); ACC];
        for _ in 0..STEPS {
            for a in acc.iter_mut() {
                *a = _mm512_dpbusd_epi32(*a, a8, b8);
            }
        }
        black_box(acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_are_read_and_peaks_are_positive() {
        let c = cpu();
        assert!(!c.model.is_empty() && c.cores >= 1);
        assert!(c.features.iter().all(|f| FEATURES.contains(&f.as_str())));
        let p = peaks(Duration::from_millis(5));
        for r in [p.f32_gflops, p.bf16_gflops, p.int8_gops]
            .into_iter()
            .flatten()
        {
            assert!(r > 0.1 && r < 1e5, "{p:?}");
        }
        if c.features.iter().any(|f| f == "avx512f") {
            assert_eq!(p.f32_bits, Some(512));
        }
        if c.features.iter().any(|f| f == "avx512_bf16") {
            assert!(p.bf16_gflops.is_some(), "{p:?}");
        }
    }
}
