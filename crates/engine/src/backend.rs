//! Backend selection: burn's Flex CPU backend or its wgpu backend (Vulkan/Metal/DX12 natively, WebGPU in
//! the browser), chosen at run time. The wgpu runtime can be initialised once per process, so its device is
//! kept in a `OnceLock` and shared.

use std::str::FromStr;

use burn::tensor::Device;

use crate::error::{Error, Result};

/// A compute backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// burn Flex: portable multi-threaded CPU kernels.
    Cpu,
    /// burn wgpu: the GPU through Vulkan/Metal/DX12, or WebGPU in the browser.
    Wgpu,
}

impl Backend {
    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Wgpu => "wgpu",
        }
    }
}

impl FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" | "flex" => Ok(Backend::Cpu),
            "wgpu" | "gpu" => Ok(Backend::Wgpu),
            other => Err(Error::Backend { backend: other.into(), reason: "unknown backend (use cpu or wgpu)".into() }),
        }
    }
}

/// The burn device for a backend (native; the browser initialises wgpu asynchronously, see
/// [`device_async`]).
#[cfg(not(target_family = "wasm"))]
pub fn device(backend: Backend) -> Result<Device> {
    match backend {
        Backend::Cpu => Ok(Device::flex()),
        Backend::Wgpu => {
            use std::sync::OnceLock;
            static WGPU: OnceLock<std::result::Result<Device, String>> = OnceLock::new();
            WGPU.get_or_init(|| Device::wgpu_options().init().map_err(|e| format!("{e:?}")))
                .clone()
                .map_err(|reason| Error::Backend { backend: "wgpu".into(), reason })
        }
    }
}

/// The burn device for a backend, initialised without blocking (the only way in the browser). burn's
/// wgpu runtime registers once per process, so the device is kept and handed out again.
pub async fn device_async(backend: Backend) -> Result<Device> {
    match backend {
        Backend::Cpu => Ok(Device::flex()),
        #[cfg(not(target_family = "wasm"))]
        Backend::Wgpu => device(backend),
        #[cfg(target_family = "wasm")]
        Backend::Wgpu => {
            use std::cell::RefCell;
            thread_local!(static WGPU: RefCell<Option<Device>> = const { RefCell::new(None) });
            if let Some(d) = WGPU.with(|c| c.borrow().clone()) {
                return Ok(d);
            }
            let d = Device::wgpu_options()
                .init_async()
                .await
                .map_err(|e| Error::Backend { backend: "wgpu".into(), reason: format!("{e:?}") })?;
            WGPU.with(|c| *c.borrow_mut() = Some(d.clone()));
            Ok(d)
        }
    }
}

/// In the browser the blocking initialiser cannot run; callers use [`device_async`].
#[cfg(target_family = "wasm")]
pub fn device(backend: Backend) -> Result<Device> {
    match backend {
        Backend::Cpu => Ok(Device::flex()),
        Backend::Wgpu => {
            Err(Error::Backend { backend: "wgpu".into(), reason: "use device_async in the browser".into() })
        }
    }
}

/// The weight storage a backend runs best with: integer-coded GGUF blocks on the CPU (2.7× fewer bytes
/// per decode step, values bit-identical to dequantization), f32 tensors on the GPU.
pub fn default_weight_mode(backend: Backend) -> chorus_models::WeightMode {
    match backend {
        Backend::Cpu => chorus_models::WeightMode::Quantized,
        Backend::Wgpu => chorus_models::WeightMode::F32,
    }
}
