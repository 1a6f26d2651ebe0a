//! The ggml tensor types: every type id llama.cpp's `ggml.h` defines, with its block size (elements
//! per block) and type size (bytes per block), and the byte size of a tensor from its shape.
//!
//! Figures are ggml's own (`type_traits` in `ggml/src/ggml.c`, block structs in `ggml-common.h`).
//! Where gguf-py's `GGML_QUANT_SIZES` disagrees, ggml wins: gguf-py lists Q8_1 as 40 bytes, a
//! leftover from when its scales were f32, but ggml's `block_q8_1` is two f16 and 32 quants, 36
//! bytes. Ids 4, 5 (old Q4_2/Q4_3), 31–33 (Q4_0_4_4…) and 36–38 (IQ4_NL_4_4…) were removed from
//! ggml and are refused like any unknown id. depthprune never computes with tensor data; it only
//! needs sizes, so a type it could not dequantize is still copied exactly.

use serde::Serialize;

/// A ggml tensor type. Built from a file's id only through [`GgmlType::from_id`].
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
}

/// ggml's super-block size for the k-quants and i-quants (`QK_K`).
const QK_K: u32 = 256;

/// Why a shape has no valid byte size for a type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// A dimension is zero, so the tensor would hold nothing (ggml refuses these).
    #[error("dimension {index} is zero")]
    ZeroDim { index: usize },
    /// The element count or byte size does not fit in 64 bits.
    #[error("its size overflows 64 bits")]
    Overflow,
    /// The row length (first dimension) is not a whole number of blocks.
    #[error("row length {row} is not a multiple of {ty}'s block size {block}")]
    PartialBlock { row: u64, ty: GgmlType, block: u32 },
}

impl GgmlType {
    /// Every type, in id order.
    pub const ALL: [GgmlType; 34] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ3_XXS,
        GgmlType::IQ1_S,
        GgmlType::IQ4_NL,
        GgmlType::IQ3_S,
        GgmlType::IQ2_S,
        GgmlType::IQ4_XS,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::IQ1_M,
        GgmlType::BF16,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::MXFP4,
        GgmlType::NVFP4,
        GgmlType::Q1_0,
    ];

    /// The type with this id, or `None` for an id ggml does not define (or has removed).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Self::ALL.iter().copied().find(|t| t.id() == id)
    }

    /// The id written in GGUF tensor infos.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// `(name, block size in elements, block size in bytes)`, as in ggml's `type_traits`.
    fn traits(self) -> (&'static str, u32, u32) {
        use GgmlType::*;
        match self {
            F32 => ("F32", 1, 4),
            F16 => ("F16", 1, 2),
            Q4_0 => ("Q4_0", 32, 2 + 16),
            Q4_1 => ("Q4_1", 32, 2 + 2 + 16),
            Q5_0 => ("Q5_0", 32, 2 + 4 + 16),
            Q5_1 => ("Q5_1", 32, 2 + 2 + 4 + 16),
            Q8_0 => ("Q8_0", 32, 2 + 32),
            Q8_1 => ("Q8_1", 32, 2 + 2 + 32),
            Q2_K => ("Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
            Q3_K => ("Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
            Q4_K => ("Q4_K", QK_K, 2 + 2 + 12 + QK_K / 2),
            Q5_K => ("Q5_K", QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2),
            Q6_K => ("Q6_K", QK_K, 2 + QK_K / 16 + 3 * QK_K / 4),
            Q8_K => ("Q8_K", QK_K, 4 + QK_K + QK_K / 16 * 2),
            IQ2_XXS => ("IQ2_XXS", QK_K, 2 + QK_K / 8 * 2),
            IQ2_XS => ("IQ2_XS", QK_K, 2 + QK_K / 8 * 2 + QK_K / 32),
            IQ3_XXS => ("IQ3_XXS", QK_K, 2 + 3 * (QK_K / 8)),
            IQ1_S => ("IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16),
            IQ4_NL => ("IQ4_NL", 32, 2 + 16),
            IQ3_S => ("IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
            IQ2_S => ("IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16),
            IQ4_XS => ("IQ4_XS", QK_K, 2 + 2 + QK_K / 64 + QK_K / 2),
            I8 => ("I8", 1, 1),
            I16 => ("I16", 1, 2),
            I32 => ("I32", 1, 4),
            I64 => ("I64", 1, 8),
            F64 => ("F64", 1, 8),
            IQ1_M => ("IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
            BF16 => ("BF16", 1, 2),
            TQ1_0 => ("TQ1_0", QK_K, 2 + (QK_K - 4 * QK_K / 64) / 5 + QK_K / 64),
            TQ2_0 => ("TQ2_0", QK_K, 2 + QK_K / 4),
            MXFP4 => ("MXFP4", 32, 1 + 16),
            NVFP4 => ("NVFP4", 64, 64 / 16 + 64 / 2),
            Q1_0 => ("Q1_0", 128, 2 + 128 / 8),
        }
    }

    /// The name llama.cpp prints (upper case, e.g. `Q4_K`).
    pub fn name(self) -> &'static str {
        self.traits().0
    }

    /// Elements per block.
    pub fn block_size(self) -> u32 {
        self.traits().1
    }

    /// Bytes per block.
    pub fn type_size(self) -> u32 {
        self.traits().2
    }

    /// Whether the type packs elements into blocks with scales.
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// The bytes a tensor of this type and shape occupies. `dims` are in GGUF order: `dims[0]`
    /// is the row length (ggml's `ne[0]`), which must be a whole number of blocks.
    pub fn tensor_bytes(self, dims: &[u64]) -> Result<u64, ShapeError> {
        if let Some(index) = dims.iter().position(|&d| d == 0) {
            return Err(ShapeError::ZeroDim { index });
        }
        let row = dims.first().copied().unwrap_or(1);
        let block = u64::from(self.block_size());
        if row % block != 0 {
            return Err(ShapeError::PartialBlock {
                row,
                ty: self,
                block: self.block_size(),
            });
        }
        let rows = dims
            .iter()
            .skip(1)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or(ShapeError::Overflow)?;
        (row / block)
            .checked_mul(u64::from(self.type_size()))
            .and_then(|row_bytes| row_bytes.checked_mul(rows))
            .ok_or(ShapeError::Overflow)
    }
}

/// The number of elements in a shape, or `None` on overflow.
pub fn element_count(dims: &[u64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for GgmlType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The figures ggml's `type_traits` table gives, written out as plain numbers so that a slip
    /// in the formulas above shows up here.
    #[test]
    fn sizes_match_ggml_type_traits() {
        let expected: &[(u32, &str, u32, u32)] = &[
            (0, "F32", 1, 4),
            (1, "F16", 1, 2),
            (2, "Q4_0", 32, 18),
            (3, "Q4_1", 32, 20),
            (6, "Q5_0", 32, 22),
            (7, "Q5_1", 32, 24),
            (8, "Q8_0", 32, 34),
            (9, "Q8_1", 32, 36),
            (10, "Q2_K", 256, 84),
            (11, "Q3_K", 256, 110),
            (12, "Q4_K", 256, 144),
            (13, "Q5_K", 256, 176),
            (14, "Q6_K", 256, 210),
            (15, "Q8_K", 256, 292),
            (16, "IQ2_XXS", 256, 66),
            (17, "IQ2_XS", 256, 74),
            (18, "IQ3_XXS", 256, 98),
            (19, "IQ1_S", 256, 50),
            (20, "IQ4_NL", 32, 18),
            (21, "IQ3_S", 256, 110),
            (22, "IQ2_S", 256, 82),
            (23, "IQ4_XS", 256, 136),
            (24, "I8", 1, 1),
            (25, "I16", 1, 2),
            (26, "I32", 1, 4),
            (27, "I64", 1, 8),
            (28, "F64", 1, 8),
            (29, "IQ1_M", 256, 56),
            (30, "BF16", 1, 2),
            (34, "TQ1_0", 256, 54),
            (35, "TQ2_0", 256, 66),
            (39, "MXFP4", 32, 17),
            (40, "NVFP4", 64, 36),
            (41, "Q1_0", 128, 18),
        ];
        assert_eq!(expected.len(), GgmlType::ALL.len());
        for &(id, name, block, size) in expected {
            let t = GgmlType::from_id(id).unwrap_or_else(|| panic!("id {id} missing"));
            assert_eq!(
                (t.id(), t.name(), t.block_size(), t.type_size()),
                (id, name, block, size)
            );
        }
    }

    #[test]
    fn removed_and_unknown_ids_are_refused() {
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 42, 1000, u32::MAX] {
            assert_eq!(GgmlType::from_id(id), None, "id {id}");
        }
    }

    #[test]
    fn tensor_bytes_from_shape() {
        assert_eq!(GgmlType::F32.tensor_bytes(&[576]), Ok(2304));
        assert_eq!(GgmlType::Q4_1.tensor_bytes(&[1536, 576]), Ok(552_960));
        assert_eq!(GgmlType::Q8_0.tensor_bytes(&[576, 49152]), Ok(30_081_024));
        assert_eq!(GgmlType::IQ2_XXS.tensor_bytes(&[512, 3]), Ok(2 * 66 * 3));
        assert_eq!(GgmlType::F16.tensor_bytes(&[]), Ok(2));
    }

    #[test]
    fn tensor_bytes_refuses_bad_shapes() {
        assert_eq!(
            GgmlType::Q4_K.tensor_bytes(&[100, 2]),
            Err(ShapeError::PartialBlock {
                row: 100,
                ty: GgmlType::Q4_K,
                block: 256
            })
        );
        assert_eq!(
            GgmlType::F32.tensor_bytes(&[4, 0]),
            Err(ShapeError::ZeroDim { index: 1 })
        );
        assert_eq!(
            GgmlType::F32.tensor_bytes(&[1 << 62, 2]),
            Err(ShapeError::Overflow)
        );
        assert_eq!(
            GgmlType::F32.tensor_bytes(&[u64::MAX, u64::MAX]),
            Err(ShapeError::Overflow)
        );
    }
}
