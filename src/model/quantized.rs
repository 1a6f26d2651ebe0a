//! Quantized GGUF weights kept as the file's ggml blocks (`compute` quant, issue 24): the matrix
//! weights of a quantized GGUF become candle [`QTensor`]s, multiplied with candle's quantized
//! kernels (SIMD dot products against activations quantized per row, as llama.cpp does), and the
//! embedding rows a batch looks up are the only ones widened to f32.
//!
//! The blocks are copied out of the mapped file once (candle owns its storage), a few MiB at a
//! time, and each piece's file pages are released as soon as it is copied, so a model holds its
//! weights about once, in their file size, even while it loads: a single 178 MB embedding (Gemma
//! 3's, Q8_0) copied whole held both copies for a moment, 180 MB over the steady state.

use super::kernel::{self, Kernel, Kind};
use super::widen::{self, Widen};
use crate::error::{Error, Result};
use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0,
};
use candle_core::quantized::{GgmlDType, GgmlType, QStorage, QTensor, QuantizedType};
use candle_core::Tensor;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The candle block type of ggml type `id`, for the types the quantized kernels multiply; `None`
/// for float types (read as floats) and for block types candle lacks (dequantized instead).
pub(crate) fn kernel_dtype(id: u32) -> Option<GgmlDType> {
    Some(match id {
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        _ => return None,
    })
}

/// Bytes copied between two calls of the `release` hook of [`qtensor`].
const COPY_CHUNK: usize = 4 << 20;

/// `bytes` as a vector of blocks of type `T` (copied, so the blocks are aligned whatever the
/// alignment of `bytes`), calling `release` on each piece of `bytes` once it is copied.
fn blocks<T: GgmlType + 'static>(bytes: &[u8], release: &dyn Fn(&[u8])) -> Box<dyn QuantizedType> {
    let size = std::mem::size_of::<T>();
    let n = bytes.len() / size;
    let mut v = vec![T::zeros(); n];
    let per = (COPY_CHUNK / size).max(1) * size;
    let dst = v.as_mut_ptr().cast::<u8>();
    for (k, piece) in bytes[..n * size].chunks(per).enumerate() {
        // SAFETY: `v` holds `n` blocks of `size` bytes, so bytes `k * per ..` up to `n * size`
        // lie inside it; the blocks are plain data (integers and halves, no padding that
        // matters), so any bytes are a valid value.
        unsafe {
            std::ptr::copy_nonoverlapping(piece.as_ptr(), dst.add(k * per), piece.len());
        }
        release(piece);
    }
    Box::new(v)
}

/// A `(rows, cols)` matrix of ggml blocks of `dtype` from its bytes, row-major as GGUF stores
/// it. The byte count is checked against the shape; `what` names the tensor in errors.
/// `release` is called on each piece of `bytes` once it is copied (mapped file pages can then
/// leave the process's memory).
pub(crate) fn qtensor(
    dtype: GgmlDType,
    bytes: &[u8],
    rows: usize,
    cols: usize,
    what: &str,
    release: &dyn Fn(&[u8]),
) -> Result<Arc<QTensor>> {
    let (bs, ts) = (dtype.block_size(), dtype.type_size());
    let want = (cols.is_multiple_of(bs))
        .then(|| rows.checked_mul(cols / bs)?.checked_mul(ts))
        .flatten();
    if want != Some(bytes.len()) || rows == 0 || cols == 0 {
        return Err(Error::Compute(format!(
            "tensor `{what}`: {} bytes of {dtype:?} do not hold a {rows} × {cols} matrix",
            bytes.len()
        )));
    }
    let storage = match dtype {
        GgmlDType::Q4_0 => blocks::<BlockQ4_0>(bytes, release),
        GgmlDType::Q4_1 => blocks::<BlockQ4_1>(bytes, release),
        GgmlDType::Q5_0 => blocks::<BlockQ5_0>(bytes, release),
        GgmlDType::Q5_1 => blocks::<BlockQ5_1>(bytes, release),
        GgmlDType::Q8_0 => blocks::<BlockQ8_0>(bytes, release),
        GgmlDType::Q2K => blocks::<BlockQ2K>(bytes, release),
        GgmlDType::Q3K => blocks::<BlockQ3K>(bytes, release),
        GgmlDType::Q4K => blocks::<BlockQ4K>(bytes, release),
        GgmlDType::Q5K => blocks::<BlockQ5K>(bytes, release),
        GgmlDType::Q6K => blocks::<BlockQ6K>(bytes, release),
        other => {
            return Err(Error::Compute(format!(
                "tensor `{what}`: {other:?} has no quantized kernel"
            )))
        }
    };
    Ok(Arc::new(QTensor::new(
        QStorage::Cpu(storage),
        (rows, cols),
    )?))
}

/// Products of at least this many rows widen the weight to f32 and multiply in f32 (by the
/// kernel measured fastest for the block type, `kernel.rs`); a single row (a generation step)
/// uses candle's quantized kernels, which quantize the activations to 8 bits as llama.cpp does.
/// Widening keeps every result that scores text (perplexity, multiple choice, healing) equal to
/// the dequantized model's: with 8-bit activations, short multiple-choice batches moved
/// log-likelihoods by 0.21 against transformers (`tests/tasks_smollm2.rs`).
const WIDEN_ROWS: usize = 2;

/// `xs (rows, in)` times the transpose of the quantized `(out, in)` weight: `(rows, out)` in f32.
pub(crate) fn matmul(xs: &Tensor, w: &QTensor) -> Result<Tensor> {
    let xs = xs.contiguous()?;
    let (m, k) = xs.dims2()?;
    if m < WIDEN_ROWS {
        return Ok(xs.apply_op1_no_bwd(w)?);
    }
    let (n, wk) = w.shape().dims2()?;
    if wk != k {
        return Err(Error::Compute(format!(
            "quantized product: ({m}, {k}) @ ({n}, {wk})ᵀ"
        )));
    }
    let data = w.data()?;
    let blocks = Blocks::new(w.dtype(), &data, n * k)?;
    let (storage, layout) = xs.storage_and_layout();
    let (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(all)), Some((a, b))) =
        (&*storage, layout.contiguous_offsets())
    else {
        return Err(Error::Compute(
            "quantized product: activations are not contiguous f32 on the CPU".into(),
        ));
    };
    let x = &all[a..b];
    let kind = Kind {
        weight: dtype_name(w.dtype()),
        many_rows: true,
    };
    let mut last: Option<(Kernel, Vec<f32>)> = None;
    let candidates = [Kernel::Widen, Kernel::Tiles];
    let chosen = kernel::choose(kind, [m, k, n], &candidates, |kernel| {
        let t = Instant::now();
        let out = matmul_by(x, m, k, &blocks, n, kernel);
        let took = t.elapsed();
        last = Some((kernel, out));
        took.max(Duration::from_nanos(1))
    });
    let out = match last {
        Some((k, out)) if k == chosen => out,
        _ => matmul_by(x, m, k, &blocks, n, chosen),
    };
    Ok(Tensor::from_vec(out, (m, n), &candle_core::Device::Cpu)?)
}

/// `xs (m, k) @ w (n, k)ᵀ` by `kernel` (widen or tiles; the others are not offered for blocks).
fn matmul_by(xs: &[f32], m: usize, k: usize, w: &Blocks<'_>, n: usize, kernel: Kernel) -> Vec<f32> {
    match kernel {
        Kernel::Tiles => widen::tiles(xs, m, k, w, n),
        _ => widen::widened(xs, m, k, w, n),
    }
}

/// Appends rows `rows` of a quantized `(n, k)` matrix to `out`, widened to f32 (in place, with
/// no copy of the blocks).
pub(crate) fn widen_rows(
    w: &QTensor,
    rows: std::ops::Range<usize>,
    out: &mut Vec<f32>,
) -> Result<()> {
    let (n, k) = w.shape().dims2()?;
    if rows.end > n || rows.start > rows.end {
        return Err(Error::Compute(format!(
            "rows {}..{} of a quantized matrix of {n}",
            rows.start, rows.end
        )));
    }
    let data = w.data()?;
    let blocks = Blocks::new(w.dtype(), &data, n * k)?;
    let at = out.len();
    out.resize(at + rows.len() * k, 0.0);
    blocks.widen(rows.start * k, &mut out[at..]);
    Ok(())
}

/// The name of a block type as the kernel records give it (`q4_k`).
fn dtype_name(dtype: GgmlDType) -> &'static str {
    match dtype {
        GgmlDType::Q4_0 => "q4_0",
        GgmlDType::Q4_1 => "q4_1",
        GgmlDType::Q5_0 => "q5_0",
        GgmlDType::Q5_1 => "q5_1",
        GgmlDType::Q8_0 => "q8_0",
        GgmlDType::Q2K => "q2_k",
        GgmlDType::Q3K => "q3_k",
        GgmlDType::Q4K => "q4_k",
        GgmlDType::Q5K => "q5_k",
        GgmlDType::Q6K => "q6_k",
        _ => "other",
    }
}

/// A quantized weight's blocks, read in place: the storage candle holds for a [`QTensor`]
/// built by [`qtensor`] (a vector of blocks, so aligned for them).
struct Blocks<'a> {
    dtype: GgmlDType,
    bytes: &'a [u8],
}

impl<'a> Blocks<'a> {
    /// The blocks of `elems` values of `dtype` in `bytes`, checked.
    fn new(dtype: GgmlDType, bytes: &'a [u8], elems: usize) -> Result<Self> {
        let (bs, ts) = (dtype.block_size(), dtype.type_size());
        let fits = elems.is_multiple_of(bs) && bytes.len() == elems / bs * ts;
        if !fits || dtype_name(dtype) == "other" {
            return Err(Error::Compute(format!(
                "{} bytes of {dtype:?} do not hold {elems} values",
                bytes.len()
            )));
        }
        Ok(Blocks { dtype, bytes })
    }
}

/// Widens the blocks `bytes` holds (whole blocks of `T`) into `out`.
fn to_float<T: GgmlType>(bytes: &[u8], out: &mut [f32]) {
    let size = std::mem::size_of::<T>();
    assert!(
        bytes.len().is_multiple_of(size)
            && (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
            && out.len() == bytes.len() / size * T::BLCK_SIZE,
        "blocks are whole, aligned and fill the output"
    );
    // SAFETY: the bytes are whole blocks of `T`, aligned for it (asserted), and blocks are
    // plain data (integers and halves) for which any bytes are a value.
    let blocks =
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) };
    T::to_float(blocks, out);
}

impl Widen for Blocks<'_> {
    fn widen(&self, start: usize, out: &mut [f32]) {
        let (bs, ts) = (self.dtype.block_size(), self.dtype.type_size());
        let bytes = &self.bytes[start / bs * ts..(start + out.len()) / bs * ts];
        match self.dtype {
            GgmlDType::Q4_0 => to_float::<BlockQ4_0>(bytes, out),
            GgmlDType::Q4_1 => to_float::<BlockQ4_1>(bytes, out),
            GgmlDType::Q5_0 => to_float::<BlockQ5_0>(bytes, out),
            GgmlDType::Q5_1 => to_float::<BlockQ5_1>(bytes, out),
            GgmlDType::Q8_0 => to_float::<BlockQ8_0>(bytes, out),
            GgmlDType::Q2K => to_float::<BlockQ2K>(bytes, out),
            GgmlDType::Q3K => to_float::<BlockQ3K>(bytes, out),
            GgmlDType::Q4K => to_float::<BlockQ4K>(bytes, out),
            GgmlDType::Q5K => to_float::<BlockQ5K>(bytes, out),
            GgmlDType::Q6K => to_float::<BlockQ6K>(bytes, out),
            // `Blocks::new` takes only the types above.
            other => unreachable!("no blocks of {other:?}"),
        }
    }
}

/// Rows `ids` of a quantized `(vocab, hidden)` matrix, widened to f32: `(n, hidden)`.
pub(crate) fn rows(w: &QTensor, ids: &Tensor) -> Result<Tensor> {
    Ok(w.embedding(ids)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn quantized_product_follows_the_dequantized_one() {
        let (rows, cols) = (8, 64);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let wt = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::Q8_0).unwrap();
        let bytes = q.data().unwrap().into_owned();
        let mine = qtensor(GgmlDType::Q8_0, &bytes, rows, cols, "w", &|_| {}).unwrap();
        let dense = mine.dequantize(&Device::Cpu).unwrap();
        // One row (a generation step) takes candle's quantized kernel.
        let xs: Vec<f32> = (0..cols)
            .map(|i| ((i * 11 % 17) as f32 - 8.0) / 9.0)
            .collect();
        let xs = Tensor::from_vec(xs, (1, cols), &Device::Cpu).unwrap();
        let got = matmul(&xs, &mine).unwrap().flatten_all().unwrap();
        let want = xs
            .matmul(&dense.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap();
        let (got, want) = (
            got.to_vec1::<f32>().unwrap(),
            want.to_vec1::<f32>().unwrap(),
        );
        for (g, w) in got.iter().zip(&want) {
            // Activations are quantized to 8 bits per block: close, not equal.
            assert!((g - w).abs() < 0.05 * (1.0 + w.abs()), "{g} vs {w}");
        }
        assert!(
            got.iter().zip(&want).any(|(g, w)| g != w),
            "one row must go through the 8-bit kernel, not the widened product"
        );
        // A batch of many rows widens the weight and multiplies in f32: the dequantized result,
        // by the kernel chosen for it.
        let many: Vec<f32> = (0..40 * cols)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let many = Tensor::from_vec(many, (40, cols), &Device::Cpu).unwrap();
        let want = many.matmul(&dense.t().unwrap()).unwrap();
        let got = matmul(&many, &mine).unwrap();
        let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        let ids = Tensor::new(&[5u32, 0], &Device::Cpu).unwrap();
        let picked = super::rows(&mine, &ids).unwrap();
        let want = dense.index_select(&ids, 0).unwrap();
        let diff = (picked - want).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn every_kernel_gives_the_dequantized_product() {
        let (n, m) = (70, 19);
        for (dtype, k) in [
            (GgmlDType::Q8_0, 96),
            (GgmlDType::Q4_1, 64),
            (GgmlDType::Q4K, 512),
            (GgmlDType::Q6K, 256),
        ] {
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
                .collect();
            let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&wt, dtype).unwrap();
            let bytes = q.data().unwrap().into_owned();
            let mine = qtensor(dtype, &bytes, n, k, "w", &|_| {}).unwrap();
            let dense: Vec<f32> = mine
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let xs: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let want: Vec<f64> = (0..m * n)
                .map(|i| {
                    let (r, c) = (i / n, i % n);
                    (0..k)
                        .map(|j| xs[r * k + j] as f64 * dense[c * k + j] as f64)
                        .sum()
                })
                .collect();
            let data = mine.data().unwrap();
            let blocks = Blocks::new(dtype, &data, n * k).unwrap();
            for kernel in [Kernel::Widen, Kernel::Tiles] {
                let got = matmul_by(&xs, m, k, &blocks, n, kernel);
                for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g as f64 - e).abs() < 1e-4,
                        "{dtype:?} {kernel:?}: element {i}: {g} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn blocks_are_copied_in_pieces_each_released_once_copied() {
        // Q8_0 blocks are 34 bytes for 32 values: a matrix of about 2.5 copy pieces.
        let (rows, cols) = (2 * COPY_CHUNK / 34 / 8 + 40, 8 * 32);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 31 % 29) as f32 - 14.0) / 3.0)
            .collect();
        let wt = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::Q8_0).unwrap();
        let bytes = q.data().unwrap().into_owned();
        let seen = std::cell::RefCell::new(Vec::new());
        let mine = qtensor(GgmlDType::Q8_0, &bytes, rows, cols, "w", &|piece| {
            let at = piece.as_ptr() as usize - bytes.as_ptr() as usize;
            seen.borrow_mut().push((at, piece.len()));
        })
        .unwrap();
        let seen = seen.into_inner();
        assert_eq!(seen.len(), 3, "{seen:?}");
        let mut next = 0;
        for &(at, len) in &seen {
            assert!(at == next && len <= COPY_CHUNK && len % 34 == 0, "{seen:?}");
            next += len;
        }
        assert_eq!(next, bytes.len());
        let diff = (mine.dequantize(&Device::Cpu).unwrap() - q.dequantize(&Device::Cpu).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn refuses_bytes_that_do_not_fill_the_shape() {
        let err = qtensor(GgmlDType::Q8_0, &[0u8; 33], 2, 32, "w", &|_| {}).unwrap_err();
        assert!(err.to_string().contains("`w`"), "{err}");
        assert!(qtensor(GgmlDType::Q8_0, &[0u8; 68], 2, 32, "w", &|_| {}).is_ok());
        assert!(qtensor(GgmlDType::Q8_0, &[0u8; 34], 1, 33, "w", &|_| {}).is_err());
    }
}
