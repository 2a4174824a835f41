//! Streaming output: sharded safetensors written tensor by tensor. Every tensor's shape and dtype are
//! known before the first value is merged, so each shard's header (with all data offsets) is written
//! first and the data appended as tensors arrive; nothing but the current tensor is held in memory.
//! Shard names and the index follow HF's `model-0000i-of-0000n.safetensors` /
//! `model.safetensors.index.json` (one shard: `model.safetensors`, no index).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::config::Dtype;
use crate::error::{Error, Result};

/// Values encoded per write call.
const CHUNK: usize = 1 << 16;

/// Where each output tensor goes.
#[derive(Debug, Clone)]
pub struct ShardPlan {
    /// Shards in order; each lists its tensors (name, shape) in write order.
    pub shards: Vec<Vec<(String, Vec<usize>)>>,
    /// Output type.
    pub dtype: Dtype,
}

impl ShardPlan {
    /// Fills shards in order up to `max_bytes` of data each (a tensor larger than that gets a shard of its
    /// own).
    pub fn new(tensors: &[(String, Vec<usize>)], dtype: Dtype, max_bytes: u64) -> Self {
        let mut shards: Vec<Vec<(String, Vec<usize>)>> = Vec::new();
        let mut used = 0u64;
        for (name, shape) in tensors {
            let bytes = (shape.iter().product::<usize>() * dtype.width()) as u64;
            if shards.is_empty() || (used > 0 && used + bytes > max_bytes) {
                shards.push(Vec::new());
                used = 0;
            }
            used += bytes;
            if let Some(s) = shards.last_mut() {
                s.push((name.clone(), shape.clone()));
            }
        }
        Self { shards, dtype }
    }

    /// File name of shard `i`.
    pub fn file_name(&self, i: usize) -> String {
        if self.shards.len() == 1 {
            "model.safetensors".into()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", i + 1, self.shards.len())
        }
    }

    /// Bytes of tensor data in total.
    pub fn data_bytes(&self) -> u64 {
        self.shards.iter().flatten().map(|(_, s)| (s.iter().product::<usize>() * self.dtype.width()) as u64).sum()
    }
}

/// Writes the planned tensors, in plan order, into `dir`.
pub struct ShardWriter {
    plan: ShardPlan,
    dir: PathBuf,
    shard: usize,
    next: usize,
    out: Option<BufWriter<File>>,
    written: u64,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), reason: e.to_string() }
}

impl ShardWriter {
    /// Starts writing into `dir` (which must exist).
    pub fn new(plan: ShardPlan, dir: &Path) -> Self {
        Self { plan, dir: dir.to_path_buf(), shard: 0, next: 0, out: None, written: 0 }
    }

    fn header(&self, i: usize) -> Vec<u8> {
        let mut meta = serde_json::Map::new();
        meta.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
        let mut off = 0usize;
        for (name, shape) in &self.plan.shards[i] {
            let n = shape.iter().product::<usize>() * self.plan.dtype.width();
            meta.insert(
                name.clone(),
                serde_json::json!({ "dtype": self.plan.dtype.safetensors_name(), "shape": shape, "data_offsets": [off, off + n] }),
            );
            off += n;
        }
        let mut h = serde_json::to_vec(&serde_json::Value::Object(meta)).unwrap_or_default();
        // The data section starts 8-byte aligned, as the format recommends (padding is spaces).
        while !(h.len() + 8).is_multiple_of(8) {
            h.push(b' ');
        }
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out
    }

    /// Appends the next tensor, which must be `name` with the planned number of values.
    pub fn write(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let Some((want, shape)) = self.plan.shards.get(self.shard).and_then(|s| s.get(self.next)).cloned() else {
            return Err(Error::Io {
                path: self.dir.clone(),
                reason: format!("tensor {name} is not in the shard plan"),
            });
        };
        if want != name || shape.iter().product::<usize>() != values.len() {
            return Err(Error::Io {
                path: self.dir.clone(),
                reason: format!("expected tensor {want} {shape:?}, got {name} with {} values", values.len()),
            });
        }
        if self.out.is_none() {
            let p = self.dir.join(self.plan.file_name(self.shard));
            let mut f = BufWriter::with_capacity(1 << 20, File::create(&p).map_err(|e| io(&p, e))?);
            f.write_all(&self.header(self.shard)).map_err(|e| io(&p, e))?;
            self.out = Some(f);
        }
        let p = self.dir.join(self.plan.file_name(self.shard));
        let out = self.out.as_mut().ok_or_else(|| Error::Io { path: p.clone(), reason: "not open".into() })?;
        // Encoded in chunks: no second full-size copy of the tensor.
        let mut buf = Vec::with_capacity(CHUNK * 4);
        for chunk in values.chunks(CHUNK) {
            buf.clear();
            match self.plan.dtype {
                Dtype::Float32 => chunk.iter().for_each(|v| buf.extend_from_slice(&v.to_le_bytes())),
                Dtype::Float16 => {
                    chunk.iter().for_each(|&v| buf.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()))
                }
                Dtype::Bfloat16 => {
                    chunk.iter().for_each(|&v| buf.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()))
                }
            }
            out.write_all(&buf).map_err(|e| io(&p, e))?;
            self.written += buf.len() as u64;
        }
        self.next += 1;
        if self.next == self.plan.shards[self.shard].len() {
            let f = self.out.take().ok_or_else(|| Error::Io { path: p.clone(), reason: "not open".into() })?;
            let file = f.into_inner().map_err(|e| io(&p, e.into_error()))?;
            file.sync_all().map_err(|e| io(&p, e))?;
            self.shard += 1;
            self.next = 0;
        }
        Ok(())
    }

    /// Checks every planned tensor arrived and writes the index (several shards); returns the bytes of
    /// tensor data written.
    pub fn finish(self) -> Result<u64> {
        if self.shard != self.plan.shards.len() {
            return Err(Error::Io {
                path: self.dir.clone(),
                reason: "the merge ended before every tensor was written".into(),
            });
        }
        if self.plan.shards.len() > 1 {
            let mut map = BTreeMap::new();
            for (i, s) in self.plan.shards.iter().enumerate() {
                for (name, _) in s {
                    map.insert(name.clone(), self.plan.file_name(i));
                }
            }
            let j = serde_json::json!({ "metadata": { "total_size": self.plan.data_bytes() }, "weight_map": map });
            let p = self.dir.join("model.safetensors.index.json");
            std::fs::write(&p, serde_json::to_vec_pretty(&j).unwrap_or_default()).map_err(|e| io(&p, e))?;
        }
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_round_trip_through_the_loader() {
        let dir = std::env::temp_dir().join(format!("chorus-merge-writer-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        let tensors: Vec<(String, Vec<usize>)> =
            vec![("a".into(), vec![2, 3]), ("b".into(), vec![5]), ("c".into(), vec![4, 1])];
        let plan = ShardPlan::new(&tensors, Dtype::Float16, 22);
        assert_eq!(plan.shards.len(), 2, "{plan:?}");
        let mut w = ShardWriter::new(plan, &dir);
        let vals: Vec<Vec<f32>> = vec![vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![0.5; 5], vec![-1.0, 0.0, 1.0, 2.0]];
        for ((n, _), v) in tensors.iter().zip(&vals) {
            w.write(n, v).unwrap();
        }
        assert_eq!(w.finish().unwrap(), 30);
        let set = chorus_models::SafetensorsSet::open_dir(&dir).unwrap();
        for ((n, s), v) in tensors.iter().zip(&vals) {
            assert_eq!(set.get(n).unwrap().unwrap(), (v.clone(), s.clone()));
        }
        assert!(dir.join("model-00002-of-00002.safetensors").exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
