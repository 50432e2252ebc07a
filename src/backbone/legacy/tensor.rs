//! Storages and strided tensors of a legacy checkpoint, and their conversion
//! to dense row-major float32 tensors.

use anyhow::{bail, Context, Result};

use crate::backbone::WeightTensor;

/// Element type of a storage, from its class name (`torch.FloatStorage`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageDtype {
    F16,
    BF16,
    F32,
    F64,
    U8,
    I8,
    Bool,
    I16,
    I32,
    I64,
}

impl StorageDtype {
    pub fn from_class_name(name: &str) -> Option<StorageDtype> {
        let dtype = match name {
            "HalfStorage" => StorageDtype::F16,
            "BFloat16Storage" => StorageDtype::BF16,
            "FloatStorage" => StorageDtype::F32,
            "DoubleStorage" => StorageDtype::F64,
            "ByteStorage" => StorageDtype::U8,
            "CharStorage" => StorageDtype::I8,
            "BoolStorage" => StorageDtype::Bool,
            "ShortStorage" => StorageDtype::I16,
            "IntStorage" => StorageDtype::I32,
            "LongStorage" => StorageDtype::I64,
            _ => return None,
        };
        Some(dtype)
    }

    /// Bytes per element in the file.
    pub fn size(self) -> usize {
        match self {
            StorageDtype::U8 | StorageDtype::I8 | StorageDtype::Bool => 1,
            StorageDtype::F16 | StorageDtype::BF16 | StorageDtype::I16 => 2,
            StorageDtype::F32 | StorageDtype::I32 => 4,
            StorageDtype::F64 | StorageDtype::I64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            StorageDtype::F16 | StorageDtype::BF16 | StorageDtype::F32 | StorageDtype::F64
        )
    }

    /// Decodes one little-endian element as f32; only for float dtypes.
    fn decode_f32(self, raw: &[u8]) -> f32 {
        match self {
            StorageDtype::F16 => f16_to_f32(u16::from_le_bytes([raw[0], raw[1]])),
            StorageDtype::BF16 => {
                f32::from_bits(u32::from(u16::from_le_bytes([raw[0], raw[1]])) << 16)
            }
            StorageDtype::F32 => f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]),
            StorageDtype::F64 => {
                let bytes: [u8; 8] = raw[..8].try_into().expect("slice of 8 bytes");
                f64::from_le_bytes(bytes) as f32
            }
            _ => unreachable!("decode_f32 is only called for float storages"),
        }
    }
}

/// A storage as named by a persistent id: the whole storage `key`, or the
/// view of `len` elements starting at element `offset` of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: StorageDtype,
    /// Element count of the whole storage `key`.
    pub numel: usize,
    pub offset: usize,
    pub len: usize,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub storage_offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

impl TensorRef {
    /// Copies the tensor out of the bytes of its whole storage into a dense
    /// row-major float32 tensor. `data` contains `storage.numel` elements.
    pub fn materialize(&self, data: &[u8]) -> Result<WeightTensor> {
        let dtype = self.storage.dtype;
        if !dtype.is_float() {
            bail!(
                "storage {} contains {:?} elements, not floats",
                self.storage.key,
                dtype
            );
        }
        if self.size.len() != self.stride.len() {
            bail!(
                "size {:?} and stride {:?} have different lengths",
                self.size,
                self.stride
            );
        }
        let numel = checked_product(&self.size).context("the tensor size overflows")?;
        let shape = self.size.clone();
        if numel == 0 {
            return Ok(WeightTensor {
                shape,
                data: Vec::new(),
            });
        }
        let mut last = self.storage_offset;
        for (&size, &stride) in self.size.iter().zip(&self.stride) {
            last = (size - 1)
                .checked_mul(stride)
                .and_then(|span| last.checked_add(span))
                .context("the tensor's strides overflow")?;
        }
        if last >= self.storage.len {
            bail!(
                "size {:?}, stride {:?} and offset {} reach element {last} of storage {}, which has {} elements",
                self.size,
                self.stride,
                self.storage_offset,
                self.storage.key,
                self.storage.len
            );
        }

        let elem = dtype.size();
        let base = self.storage.offset + self.storage_offset;
        let mut out = Vec::with_capacity(numel);
        // Walk the indices in row-major order like an odometer, keeping the
        // storage position of the current index in `position`.
        let mut index = vec![0usize; self.size.len()];
        let mut position = base;
        for _ in 0..numel {
            out.push(dtype.decode_f32(&data[position * elem..(position + 1) * elem]));
            for dim in (0..index.len()).rev() {
                index[dim] += 1;
                position += self.stride[dim];
                if index[dim] < self.size[dim] {
                    break;
                }
                position -= self.stride[dim] * self.size[dim];
                index[dim] = 0;
            }
        }
        Ok(WeightTensor { shape, data: out })
    }
}

fn checked_product(values: &[usize]) -> Option<usize> {
    values.iter().try_fold(1usize, |acc, &v| acc.checked_mul(v))
}

/// Converts an IEEE 754 half-precision value to f32 exactly.
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let magnitude = match exponent {
        0 => {
            // Zero or subnormal: mantissa * 2^-24 is exact in f32.
            let value = mantissa as f32 * 2f32.powi(-24);
            return if sign != 0 { -value } else { value };
        }
        0x1f => 0x7f80_0000 | (mantissa << 13),
        _ => ((exponent + 127 - 15) << 23) | (mantissa << 13),
    };
    f32::from_bits(sign | magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_known_values() {
        let cases: [(u16, f32); 8] = [
            (0x3c00, 1.0),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x7bff, 65504.0),
            (0x0001, 5.960_464_5e-8),
            (0x8001, -5.960_464_5e-8),
            (0x0000, 0.0),
            (0x7c00, f32::INFINITY),
        ];
        for (bits, expected) in cases {
            assert_eq!(f16_to_f32(bits), expected, "half bits {bits:#06x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
        assert!(f16_to_f32(0x8000).is_sign_negative());
    }
}
