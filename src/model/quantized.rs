//! Quantized GGUF weights kept as the file's ggml blocks (`compute` quant, issue 24): the matrix
//! weights of a quantized GGUF become candle [`QTensor`]s, multiplied with candle's quantized
//! kernels (SIMD dot products against activations quantized per row, as llama.cpp does), and the
//! embedding rows a batch looks up are the only ones widened to f32.
//!
//! The blocks are copied out of the mapped file once (candle owns its storage), a few MiB at a
//! time, and each piece's file pages are released as soon as it is copied, so a model holds its
//! weights about once, in their file size, even while it loads: a single 178 MB embedding (Gemma
//! 3's, Q8_0) copied whole held both copies for a moment, 180 MB over the steady state.

use crate::error::{Error, Result};
use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0,
};
use candle_core::quantized::{GgmlDType, GgmlType, QStorage, QTensor, QuantizedType};
use candle_core::Tensor;
use std::sync::Arc;

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

/// Products of at least this many rows widen the weight to f32 (a slab of rows at a time) and
/// multiply in f32; a single row (a generation step) uses candle's quantized kernels, which
/// quantize the activations to 8 bits as llama.cpp does. Widening costs one pass over the weight
/// per product and keeps every result that scores text (perplexity, multiple choice, healing)
/// equal to the dequantized model's: with 8-bit activations, short multiple-choice batches
/// moved log-likelihoods by 0.21 against transformers (`tests/tasks_smollm2.rs`).
const WIDEN_ROWS: usize = 2;

/// Weight rows widened per slab: about 16 MB of f32 at a time, whatever the matrix.
const SLAB_ELEMS: usize = 1 << 22;

/// `xs (rows, in)` times the transpose of the quantized `(out, in)` weight: `(rows, out)` in f32.
pub(crate) fn matmul(xs: &Tensor, w: &QTensor) -> Result<Tensor> {
    matmul_in_slabs(xs, w, SLAB_ELEMS)
}

/// [`matmul`], widening at most `slab_elems` weights at a time.
fn matmul_in_slabs(xs: &Tensor, w: &QTensor, slab_elems: usize) -> Result<Tensor> {
    let xs = xs.contiguous()?;
    let (m, _) = xs.dims2()?;
    if m < WIDEN_ROWS {
        return Ok(xs.apply_op1_no_bwd(w)?);
    }
    let (n, k) = w.shape().dims2()?;
    let slab = (slab_elems / k.max(1)).clamp(1, n);
    if slab == n {
        let dense = w.dequantize(&candle_core::Device::Cpu)?;
        return Ok(xs.matmul(&dense.t()?)?);
    }
    let mut out = vec![0f32; m * n];
    for start in (0..n).step_by(slab) {
        let len = slab.min(n - start);
        let ids: Vec<u32> = (start..start + len).map(|i| i as u32).collect();
        let ids = Tensor::from_vec(ids, len, &candle_core::Device::Cpu)?;
        let part = xs.matmul(&rows(w, &ids)?.t()?)?;
        let part = part.flatten_all()?.to_vec1::<f32>()?;
        for (dst, src) in out.chunks_exact_mut(n).zip(part.chunks_exact(len)) {
            dst[start..start + len].copy_from_slice(src);
        }
    }
    Ok(Tensor::from_vec(out, (m, n), &candle_core::Device::Cpu)?)
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
        // in slabs when the weight is large.
        let many: Vec<f32> = (0..40 * cols)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let many = Tensor::from_vec(many, (40, cols), &Device::Cpu).unwrap();
        let want = many.matmul(&dense.t().unwrap()).unwrap();
        for slab in [SLAB_ELEMS, 3 * cols] {
            let got = matmul_in_slabs(&many, &mine, slab).unwrap();
            let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-5, "slab {slab}");
        }
        let ids = Tensor::new(&[5u32, 0], &Device::Cpu).unwrap();
        let picked = super::rows(&mine, &ids).unwrap();
        let want = dense.index_select(&ids, 0).unwrap();
        let diff = (picked - want).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
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
