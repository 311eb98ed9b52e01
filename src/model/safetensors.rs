//! The safetensors format: an 8-byte little-endian header length, a JSON header naming each
//! tensor's dtype, shape and byte range, then the data. Read memory-mapped (memmap2), with every
//! range checked against the file so that a truncated or corrupt file is an error, not a crash.

use crate::error::{Error, Result};
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Byte range within the data section.
    pub start: usize,
    pub end: usize,
}

pub struct SafeTensors {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
}

fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" => 1,
        _ => return None,
    })
}

/// The format's rule that the tensors cover the data section exactly: no gap, no overlap, no
/// trailing bytes. Without it a header edited in place (whitespace inserted, its declared length
/// unchanged) shifts every tensor by a few bytes and the file loads garbage without a word.
fn check_coverage(tensors: &BTreeMap<String, TensorInfo>, data_len: usize) -> std::result::Result<(), String> {
    let mut ranges: Vec<(usize, usize, &str)> = tensors.iter().map(|(n, t)| (t.start, t.end, n.as_str())).collect();
    ranges.sort_unstable();
    let mut covered = 0usize;
    let mut previous = "the start of the data".to_string();
    for (start, end, name) in ranges {
        if start > covered {
            return Err(format!(
                "bytes {covered}..{start} of the data lie between {previous} and tensor {name}, in no tensor: \
                 the header does not describe the data (edited or corrupt)"
            ));
        }
        if start < covered {
            return Err(format!(
                "tensor {name}'s data (bytes {start}..{end}) overlaps that of {previous}: corrupt header"
            ));
        }
        covered = end;
        previous = format!("tensor {name}");
    }
    if covered != data_len {
        return Err(format!(
            "{} bytes after the last tensor's data ({covered} of {data_len} bytes described): the header does \
             not describe the data (edited, shifted or corrupt)",
            data_len - covered
        ));
    }
    Ok(())
}

impl SafeTensors {
    pub fn open(path: &Path) -> Result<SafeTensors> {
        let io = |source| Error::Io { path: path.display().to_string(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; a file changed underneath us while mapped is outside what
        // we can defend against, as with any reader of model files.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let bad = |why: String| Error::Config(format!("{}: {why}", path.display()));
        if mmap.len() < 8 {
            return Err(bad(format!("{} bytes is too short for a safetensors file", mmap.len())));
        }
        let header_len = u64::from_le_bytes(mmap[..8].try_into().expect("8 bytes")) as usize;
        let data_start = 8usize.checked_add(header_len).filter(|&e| e <= mmap.len()).ok_or_else(|| {
            bad(format!("header of {header_len} bytes extends past the end of the file ({} bytes): truncated or not safetensors", mmap.len()))
        })?;
        let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&mmap[8..data_start])
            .map_err(|e| bad(format!("the JSON header does not parse ({e}): corrupt or not safetensors")))?;
        let data_len = mmap.len() - data_start;
        let mut tensors = BTreeMap::new();
        for (name, v) in header {
            if name == "__metadata__" {
                continue;
            }
            let field = |k: &str| v.get(k).ok_or_else(|| bad(format!("tensor {name} has no {k} in the header")));
            let dtype = field("dtype")?
                .as_str()
                .ok_or_else(|| bad(format!("tensor {name}: dtype is not a string")))?
                .to_string();
            let shape: Vec<usize> = serde_json::from_value(field("shape")?.clone())
                .map_err(|_| bad(format!("tensor {name}: bad shape")))?;
            let offsets: [usize; 2] = serde_json::from_value(field("data_offsets")?.clone())
                .map_err(|_| bad(format!("tensor {name}: bad data_offsets")))?;
            let [start, end] = offsets;
            if start > end || end > data_len {
                return Err(bad(format!(
                    "tensor {name}'s data (bytes {start}..{end}) extends past the end of the file's data ({data_len} bytes): the file is truncated or corrupt"
                )));
            }
            if let Some(size) = dtype_size(&dtype) {
                // Checked: a shape whose byte size wraps around would pass for a small tensor.
                let want = shape.iter().try_fold(size, |n, &d| n.checked_mul(d)).ok_or_else(|| {
                    bad(format!("tensor {name}: shape {shape:?} of {dtype} is too large (its byte size overflows)"))
                })?;
                if end - start != want {
                    return Err(bad(format!(
                        "tensor {name}: {} bytes of data for shape {shape:?} of {dtype} (needs {want})",
                        end - start
                    )));
                }
            }
            tensors.insert(name, TensorInfo { dtype, shape, start, end });
        }
        check_coverage(&tensors, data_len).map_err(bad)?;
        Ok(SafeTensors { path: path.to_path_buf(), mmap, data_start, tensors })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    fn bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::Config(format!("{}: no tensor {name}", self.path.display())))?;
        Ok((info, &self.mmap[self.data_start + info.start..self.data_start + info.end]))
    }

    /// A floating-point tensor as f32 values, converted from F32, F16 or BF16.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>> {
        let (info, b) = self.bytes(name)?;
        let words2 = || b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
        Ok(match info.dtype.as_str() {
            "F32" => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            "F16" => words2().map(|w| half::f16::from_bits(w).to_f32()).collect(),
            "BF16" => words2().map(|w| half::bf16::from_bits(w).to_f32()).collect(),
            other => {
                return Err(Error::Config(format!(
                    "{}: tensor {name} has dtype {other}; expected F32, F16 or BF16",
                    self.path.display()
                )));
            }
        })
    }

    /// An integer tensor as i64 values (I64 or I32).
    pub fn i64(&self, name: &str) -> Result<Vec<i64>> {
        let (info, b) = self.bytes(name)?;
        Ok(match info.dtype.as_str() {
            "I64" => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
            "I32" => b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64).collect(),
            other => {
                return Err(Error::Config(format!(
                    "{}: tensor {name} has dtype {other}; expected I64 or I32",
                    self.path.display()
                )));
            }
        })
    }
}

/// A named f32 tensor to write: (name, shape, values).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Writes f32 tensors as a safetensors file, atomically (a temporary file, then a rename).
pub fn write(path: &Path, tensors: &[NamedTensor], metadata: &BTreeMap<String, String>) -> Result<()> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).expect("strings serialise"));
    }
    let mut offset = 0usize;
    for (name, shape, data) in tensors {
        let end = offset + data.len() * 4;
        header
            .insert(name.clone(), serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, end] }));
        offset = end;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header)).expect("header serialises");
    while !json.len().is_multiple_of(8) {
        json.push(b' '); // the format pads the header to 8 bytes with spaces
    }
    let mut bytes = Vec::with_capacity(8 + json.len() + offset);
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&json);
    for (_, _, data) in tensors {
        for v in data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    crate::util::write_atomically(path, &bytes)
}
