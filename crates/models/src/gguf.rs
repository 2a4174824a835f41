//! GGUF reader (versions 2 and 3): header, typed metadata, tensor directory and tensor data.
//!
//! Hand-written rather than taken from a crate: the only maintained reader (candle's `gguf_file`) lives
//! inside candle-core and would pull a second tensor library in. Every length read from the file is
//! checked against the bytes that remain before anything is allocated, so a corrupt or hostile file gives
//! an [`Error::Gguf`] naming the offset and key, never a panic or a huge allocation (fuzzed: `fuzz/`).

use std::collections::{BTreeMap, HashMap};

use chorus_core::ggml::{self, GgmlType};

use crate::bytes::FileBytes;
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, when it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short description for `chorus inspect` (arrays are summarised, long strings cut).
    pub fn summary(&self) -> String {
        match self {
            Value::Str(s) if s.chars().count() > 80 => {
                format!("{:?}… ({} chars)", s.chars().take(77).collect::<String>(), s.len())
            }
            Value::Str(s) => format!("{s:?}"),
            Value::Array(a) => format!("[{} items]", a.len()),
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            other => other.as_u64().map(|v| v.to_string()).unwrap_or_else(|| format!("{other:?}")),
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in ggml order (innermost first).
    pub dims: Vec<u64>,
    /// GGML type id.
    pub type_id: u32,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }

    /// Shape in row-major order (outermost first), as PyTorch and safetensors write it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// The decoded type, when supported.
    pub fn ggml_type(&self) -> Option<GgmlType> {
        GgmlType::from_id(self.type_id)
    }

    /// ggml's name of the stored type.
    pub fn type_name(&self) -> &'static str {
        GgmlType::name_of(self.type_id)
    }
}

/// A parsed GGUF file; tensor data stays in the (mapped) file until asked for.
pub struct GgufFile {
    name: String,
    bytes: FileBytes,
    /// Format version (2 or 3).
    pub version: u32,
    /// All metadata, by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor directory, in file order.
    pub tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    data_start: usize,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: impl std::fmt::Display) -> Error {
        Error::Gguf { file: self.file.to_string(), reason: format!("{what} (at byte {})", self.pos) }
    }
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!("truncated: {what} needs {n} bytes, {} remain", self.remaining())));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    /// A count of items that each take at least `min_item` bytes: bounded by what remains.
    fn count(&mut self, what: &str, min_item: usize) -> Result<usize> {
        let n = self.u64(what)?;
        if n > (self.remaining() / min_item.max(1)) as u64 {
            return Err(self.err(format!(
                "truncated or corrupt: {what} = {n} cannot fit in the {} remaining bytes",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.err(format!("{what} is not valid UTF-8")))
    }
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>(key)?[0]),
            1 => Value::I8(self.arr::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.arr(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.arr(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.arr(key)?)),
            7 => match self.arr::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("metadata '{key}': bool byte {b} is neither 0 nor 1"))),
            },
            8 => Value::Str(self.string(key)?),
            9 => {
                if depth > 2 {
                    return Err(self.err(format!("metadata '{key}': arrays nested too deeply")));
                }
                let et = self.u32(key)?;
                let min = match et {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    t => return Err(self.err(format!("metadata '{key}': unknown array element type {t}"))),
                };
                let n = self.count(key, min)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(et, key, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.arr(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.arr(key)?)),
            t => return Err(self.err(format!("metadata '{key}': unknown value type {t}"))),
        })
    }
}

impl GgufFile {
    /// Opens (memory-maps) and parses a GGUF file.
    #[cfg(not(target_family = "wasm"))]
    pub fn open(path: &std::path::Path) -> Result<Self> {
        Self::parse(&path.display().to_string(), FileBytes::open(path)?)
    }

    /// Parses GGUF bytes; `name` is used in error messages.
    pub fn parse(name: &str, bytes: FileBytes) -> Result<Self> {
        let b: &[u8] = &bytes;
        let mut c = Cursor { b, pos: 0, file: name };
        let magic = c.arr::<4>("magic")?;
        if &magic != MAGIC {
            return Err(c.err(format!("bad magic {magic:02x?}, expected \"GGUF\"")));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(c.err(format!("version {version} is not supported (2 and 3 are)")));
        }
        let n_tensors = c.count("tensor_count", 8 + 4 + 8 + 4 + 8)?;
        let n_kv = c.count("metadata_kv_count", 8 + 4)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32(&key)?;
            let v = c.value(ty, &key, 0)?;
            metadata.insert(key, v);
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut by_name = HashMap::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let tname = c.string("tensor name")?;
            let nd = c.u32(&tname)? as usize;
            if nd == 0 || nd > 4 {
                return Err(c.err(format!("tensor '{tname}': {nd} dimensions (1 to 4 allowed)")));
            }
            let mut dims = Vec::with_capacity(nd);
            for _ in 0..nd {
                dims.push(c.u64(&tname)?);
            }
            let total = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            if total.is_none_or(|t| t > (1u64 << 40)) {
                return Err(c.err(format!("tensor '{tname}': dimensions {dims:?} are too large")));
            }
            let type_id = c.u32(&tname)?;
            let offset = c.u64(&tname)?;
            if by_name.insert(tname.clone(), i).is_some() {
                return Err(c.err(format!("tensor '{tname}' appears twice")));
            }
            tensors.push(TensorInfo { name: tname, dims, type_id, offset });
        }
        let align = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(c.err(format!("general.alignment {} is not a power of two", v.summary()))),
            },
        };
        let data_start = (c.pos as u64).div_ceil(align) * align;
        let data_len = b.len() as u64;
        if data_start > data_len && n_tensors > 0 {
            return Err(c.err("truncated: the file ends before its tensor data"));
        }
        for t in &tensors {
            if t.offset % align != 0 {
                return Err(c.err(format!("tensor '{}': offset {} is not aligned to {align}", t.name, t.offset)));
            }
            if let Some(ty) = t.ggml_type() {
                let size = ty.bytes_for(t.elements()).ok_or_else(|| {
                    c.err(format!(
                        "tensor '{}': {} elements is not a whole number of {} blocks",
                        t.name,
                        t.elements(),
                        ty.name()
                    ))
                })? as u64;
                let end = data_start.checked_add(t.offset).and_then(|s| s.checked_add(size));
                if end.is_none_or(|e| e > data_len) {
                    return Err(Error::Gguf {
                        file: name.to_string(),
                        reason: format!(
                            "truncated: tensor '{}' ({} bytes at data offset {}) runs past the end of the file ({} bytes)",
                            t.name, size, t.offset, data_len
                        ),
                    });
                }
            }
        }
        Ok(Self { name: name.to_string(), bytes, version, metadata, tensors, by_name, data_start: data_start as usize })
    }

    /// The file name used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn field_err(&self, key: &str, reason: &str) -> Error {
        Error::Field { file: self.name.clone(), field: key.to_string(), reason: reason.to_string() }
    }

    /// A required unsigned integer.
    pub fn req_u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key).ok_or_else(|| self.field_err(key, "missing"))?;
        v.as_u64().ok_or_else(|| self.field_err(key, &format!("expected an unsigned integer, found {}", v.summary())))
    }

    /// A required number.
    pub fn req_f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key).ok_or_else(|| self.field_err(key, "missing"))?;
        v.as_f64().ok_or_else(|| self.field_err(key, &format!("expected a number, found {}", v.summary())))
    }

    /// A required string.
    pub fn req_str(&self, key: &str) -> Result<&str> {
        let v = self.get(key).ok_or_else(|| self.field_err(key, "missing"))?;
        v.as_str().ok_or_else(|| self.field_err(key, &format!("expected a string, found {}", v.summary())))
    }

    /// A required array.
    pub fn req_array(&self, key: &str) -> Result<&[Value]> {
        let v = self.get(key).ok_or_else(|| self.field_err(key, "missing"))?;
        v.as_array().ok_or_else(|| self.field_err(key, &format!("expected an array, found {}", v.summary())))
    }

    /// A tensor's directory entry.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw stored bytes of a tensor.
    pub fn tensor_bytes(&self, t: &TensorInfo) -> Result<&[u8]> {
        let ty = t.ggml_type().ok_or_else(|| Error::Dtype {
            file: self.name.clone(),
            tensor: t.name.clone(),
            dtype: t.type_name().to_string(),
        })?;
        // Bounds were checked at parse time for every supported type.
        let size = ty.bytes_for(t.elements()).unwrap_or(0);
        let start = self.data_start + t.offset as usize;
        Ok(&self.bytes[start..start + size])
    }

    /// The stored bytes of a tensor as a shared handle and a byte range into it (the CPU engine keeps
    /// weights in place in the mapped file instead of copying them).
    pub fn tensor_range(&self, t: &TensorInfo) -> Result<(FileBytes, std::ops::Range<usize>)> {
        let len = self.tensor_bytes(t)?.len();
        let start = self.data_start + t.offset as usize;
        Ok((self.bytes.clone(), start..start + len))
    }

    /// Lets tensor `name`'s pages leave the resident set (see [`FileBytes::release`]).
    pub fn release(&self, name: &str) {
        if let Some(t) = self.tensor(name)
            && let Some(size) = t.ggml_type().and_then(|ty| ty.bytes_for(t.elements()))
        {
            let start = self.data_start + t.offset as usize;
            self.bytes.release(start..start + size);
        }
    }

    /// Decodes a tensor to f32; returns the values and the row-major shape.
    pub fn dequantize(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let t = self
            .tensor(name)
            .ok_or_else(|| Error::MissingTensor { file: self.name.clone(), tensor: name.to_string() })?;
        let ty = t.ggml_type().ok_or_else(|| Error::Dtype {
            file: self.name.clone(),
            tensor: t.name.clone(),
            dtype: t.type_name().to_string(),
        })?;
        let data = self.tensor_bytes(t)?;
        let v = ggml::dequantize(ty, data, t.elements(), &t.name)
            .map_err(|err| Error::Core { file: self.name.clone(), err })?;
        Ok((v, t.shape()))
    }
}
