//! Backend selection: burn's Flex CPU backend or its wgpu backend (Vulkan/Metal/DX12 natively, WebGPU in
//! the browser), chosen at run time. The wgpu runtime can be initialised once per process, so its device is
//! kept in a `OnceLock` and shared.

use std::str::FromStr;

use burn::tensor::Device;
use chorus_gpu::GpuContext;

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

/// burn's wgpu device and a [`GpuContext`] on the same wgpu device/queue, so Chorus's WGSL kernels and
/// burn's tensors share one GPU (burn flushes its queue on every read-back, before Chorus submits).
#[cfg(not(target_family = "wasm"))]
fn wgpu_shared() -> Result<(Device, GpuContext)> {
    use std::sync::OnceLock;
    static WGPU: OnceLock<std::result::Result<(Device, GpuContext), String>> = OnceLock::new();
    WGPU.get_or_init(|| {
        let (device, setup) = Device::wgpu_options().init_with_setup().map_err(|e| format!("{e:?}"))?;
        Ok((device, shared_context(setup)))
    })
    .clone()
    .map_err(|reason| Error::Backend { backend: "wgpu".into(), reason })
}

fn shared_context(setup: burn::tensor::wgpu::WgpuSetup) -> GpuContext {
    let info = setup.adapter.get_info();
    let mut ctx = GpuContext::from_device(setup.device, setup.queue);
    ctx.adapter = format!("{} / {:?}", info.name, setup.backend);
    ctx.software = info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu;
    ctx
}

/// The burn device for a backend (native; the browser initialises wgpu asynchronously, see
/// [`device_async`]).
#[cfg(not(target_family = "wasm"))]
pub fn device(backend: Backend) -> Result<Device> {
    match backend {
        Backend::Cpu => Ok(Device::flex()),
        Backend::Wgpu => wgpu_shared().map(|(d, _)| d),
    }
}

/// The [`GpuContext`] that shares burn's wgpu device and queue (initialising both on first use).
#[cfg(not(target_family = "wasm"))]
pub fn gpu_context() -> Result<GpuContext> {
    wgpu_shared().map(|(_, g)| g)
}

/// The burn device for a backend, initialised without blocking (the only way in the browser). burn's
/// wgpu runtime registers once per process, so the device is kept and handed out again.
pub async fn device_async(backend: Backend) -> Result<Device> {
    match backend {
        Backend::Cpu => Ok(Device::flex()),
        #[cfg(not(target_family = "wasm"))]
        Backend::Wgpu => device(backend),
        #[cfg(target_family = "wasm")]
        Backend::Wgpu => Ok(wgpu_shared_async().await?.0),
    }
}

#[cfg(target_family = "wasm")]
thread_local!(static WGPU: std::cell::RefCell<Option<(Device, GpuContext)>> = const { std::cell::RefCell::new(None) });

/// The browser's [`wgpu_shared`]: burn's device and a [`GpuContext`] on the same WebGPU device.
#[cfg(target_family = "wasm")]
async fn wgpu_shared_async() -> Result<(Device, GpuContext)> {
    if let Some(pair) = WGPU.with(|c| c.borrow().clone()) {
        return Ok(pair);
    }
    let (device, setup) = Device::wgpu_options().init_with_setup_async().await.map_err(|e| {
        let raw = format!("{e:?}");
        // burn reports a missing adapter as a debug dump of its device; say what it means instead.
        let reason = if raw.contains("AdapterUnavailable") {
            "WebGPU is unavailable: this browser gave no adapter (navigator.gpu is missing or returned none); \
             use backend \"cpu\", or \"auto\", which falls back to it"
                .to_string()
        } else {
            raw
        };
        Error::Backend { backend: "wgpu".into(), reason }
    })?;
    let pair = (device, shared_context(setup));
    WGPU.with(|c| *c.borrow_mut() = Some(pair.clone()));
    Ok(pair)
}

/// The [`GpuContext`] sharing burn's wgpu device, without blocking (the browser's WebGPU device, or
/// natively the one [`gpu_context`] returns).
pub async fn gpu_context_async() -> Result<GpuContext> {
    #[cfg(target_family = "wasm")]
    {
        Ok(wgpu_shared_async().await?.1)
    }
    #[cfg(not(target_family = "wasm"))]
    {
        gpu_context()
    }
}

/// The [`GpuContext`] sharing burn's wgpu device, from a synchronous caller: natively [`gpu_context`]; in
/// the browser the one [`device_async`] initialised (an error before it has).
pub fn shared_gpu_context() -> Result<GpuContext> {
    #[cfg(target_family = "wasm")]
    {
        WGPU.with(|c| c.borrow().as_ref().map(|p| p.1.clone())).ok_or_else(|| Error::Backend {
            backend: "wgpu".into(),
            reason: "the WebGPU device is not initialised yet (await device_async first)".into(),
        })
    }
    #[cfg(not(target_family = "wasm"))]
    {
        gpu_context()
    }
}

/// Whether the wgpu adapter is a software rasteriser (SwiftShader, lavapipe): "auto" backend choices then
/// take the CPU backend, which runs small models faster than an emulated GPU.
pub async fn wgpu_is_software() -> Result<bool> {
    #[cfg(target_family = "wasm")]
    {
        Ok(wgpu_shared_async().await?.1.software)
    }
    #[cfg(not(target_family = "wasm"))]
    {
        Ok(wgpu_shared()?.1.software)
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

/// The weight storage a backend runs best with: the file's blocks as stored
/// ([`chorus_models::WeightMode::Native`]): on the CPU (native and the browser's CPU fallback) the CPU
/// engine (activations quantized per matmul as llama.cpp does; simd128 kernels in wasm), on wgpu the
/// device decoder (`chorus_gpu::decoder`: blocks decoded inside the WGSL matrix products).
pub fn default_weight_mode(backend: Backend) -> chorus_models::WeightMode {
    match backend {
        Backend::Cpu => chorus_models::WeightMode::Native,
        Backend::Wgpu => chorus_models::WeightMode::Native,
    }
}
