//! Writing a model folder (`model.safetensors` in f32 or f16 plus side files such as `config.json` and
//! `tokenizer.json`) as one unit through the shared safe-output helper: a failed save never leaves a
//! half-written folder and never replaces an existing one without `force`.

use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// One tensor to store: its name, the shape it is stored with (vectors held as `[1, n]` are stored 1-D) and
/// its values.
pub type Named = (String, Vec<usize>, Tensor<2>);

/// Serialises `tensors` as f32 safetensors bytes (`file` names the destination in errors).
pub fn safetensors_bytes(tensors: Vec<Named>, file: &str) -> Result<Vec<u8>> {
    serialize(tensors, file, false)
}

/// Serialises `tensors` as f16 safetensors bytes: half the size, for small models shipped inside the binary
/// (the loaders widen f16 back to f32).
pub fn safetensors_bytes_f16(tensors: Vec<Named>, file: &str) -> Result<Vec<u8>> {
    serialize(tensors, file, true)
}

fn serialize(tensors: Vec<Named>, file: &str, half: bool) -> Result<Vec<u8>> {
    let st_err = |reason: String| Error::Safetensors { file: file.into(), reason };
    let mut named = Vec::with_capacity(tensors.len());
    for (name, shape, t) in tensors {
        let v = t.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| Error::Device(format!("{e:?}")))?;
        if shape.iter().product::<usize>() != v.len() {
            return Err(st_err(format!("{name}: {} values do not fill shape {shape:?}", v.len())));
        }
        let bytes: Vec<u8> = if half {
            v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect()
        } else {
            v.iter().flat_map(|x| x.to_le_bytes()).collect()
        };
        named.push((name, shape, bytes));
    }
    let views = named
        .iter()
        .map(|(n, s, b)| {
            let dtype = if half { safetensors::Dtype::F16 } else { safetensors::Dtype::F32 };
            safetensors::tensor::TensorView::new(dtype, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| st_err(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| st_err(e.to_string()))
}

/// Writes the folder `dir`: `model.safetensors` from `tensors` and the side `files` (name, bytes). See
/// [`write_files`] for how existing folders and failures are handled.
#[cfg(not(target_family = "wasm"))]
pub fn write_model_dir(dir: &std::path::Path, tensors: Vec<Named>, files: &[(&str, &[u8])], force: bool) -> Result<()> {
    let st = safetensors_bytes(tensors, &dir.join("model.safetensors").display().to_string())?;
    let all: Vec<(&str, &[u8])> =
        std::iter::once(("model.safetensors", st.as_slice())).chain(files.iter().copied()).collect();
    write_files(dir, &all, force)
}

/// Writes the folder `dir` holding exactly `files` (name, bytes), built under a temporary sibling and moved
/// into place when complete ([`chorus_core::output::write_dir`]): an existing non-empty `dir` is replaced
/// only with `force`, and a failure leaves it as it was.
#[cfg(not(target_family = "wasm"))]
pub fn write_files(dir: &std::path::Path, files: &[(&str, &[u8])], force: bool) -> Result<()> {
    chorus_core::output::write_dir(dir, force, |tmp| {
        for (name, data) in files {
            let path = tmp.join(name);
            std::fs::write(&path, data).map_err(|err| Error::Io { path: path.display().to_string(), err })?;
        }
        Ok(())
    })
}
