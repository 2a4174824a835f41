//! The GPU context: device, queue and a pipeline cache keyed by [`ShaderId`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::shaders::ShaderId;

/// One dispatch: an entry point, the buffers bound at the given binding numbers (exactly those the
/// entry point uses: its pipeline layout is derived from the shader) and the workgroup counts.
pub struct Pass<'a> {
    /// Entry point.
    pub id: ShaderId,
    /// (binding number, buffer) pairs of group 0.
    pub bindings: &'a [(u32, &'a wgpu::Buffer)],
    /// Workgroups in x, y, z.
    pub groups: (u32, u32, u32),
}

/// A wgpu device and queue with compiled pipelines.
#[derive(Clone)]
pub struct GpuContext {
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// Adapter description ("llvmpipe (LLVM 15.0.6, 256 bits) / Vulkan").
    pub adapter: String,
    /// Whether the adapter is a software rasteriser on the CPU (lavapipe, SwiftShader): there burn's own
    /// CPU backend is usually faster, so "auto" backend choices avoid it.
    pub software: bool,
    /// Keyed by entry point and adapter kind (`software` picks override constants).
    pipelines: Arc<Mutex<HashMap<(ShaderId, bool), wgpu::ComputePipeline>>>,
    counters: Arc<Counters>,
}

/// What a context has done so far, for `chorus bench --json` and the tests that hold decoding to fixed
/// pipelines: a pipeline created after warm-up means a shader compile inside the decode loop.
#[derive(Default)]
struct Counters {
    pipelines: AtomicUsize,
    submits: AtomicUsize,
}

impl GpuContext {
    /// Opens the default adapter (honours `WGPU_BACKEND` and friends).
    pub async fn new() -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions::default())
            .await
            .map_err(|e| Error::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("chorus"),
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Device(e.to_string()))?;
        let mut ctx = Self::from_device(device, queue);
        ctx.adapter = format!("{} / {:?}", info.name, info.backend);
        ctx.software = info.device_type == wgpu::DeviceType::Cpu;
        Ok(ctx)
    }

    /// Wraps a device and queue opened elsewhere (burn's wgpu runtime), so kernels share that GPU.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        Self {
            device,
            queue,
            adapter: "shared device".into(),
            software: false,
            pipelines: Arc::default(),
            counters: Arc::default(),
        }
    }

    /// The compute pipeline of a shader, compiled on first use.
    pub fn pipeline(&self, id: ShaderId) -> wgpu::ComputePipeline {
        self.pipeline_counted(id).0
    }

    /// [`Self::pipeline`] and whether this call created it.
    fn pipeline_counted(&self, id: ShaderId) -> (wgpu::ComputePipeline, bool) {
        let mut cache = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        let mut created = false;
        let p = cache
            .entry((id, self.software))
            .or_insert_with(|| {
                created = true;
                self.counters.pipelines.fetch_add(1, Ordering::Relaxed);
                let constants = id.constants(self.software);
                let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(id.file_name()),
                    source: wgpu::ShaderSource::Wgsl(id.source().into()),
                });
                self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(id.file_name()),
                    layout: None,
                    module: &module,
                    entry_point: Some(id.entry_point()),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        ..Default::default()
                    },
                    cache: None,
                })
            })
            .clone();
        (p, created)
    }

    /// Compute pipelines this context (and its clones) have created: one per [`ShaderId`] used.
    pub fn pipelines_created(&self) -> usize {
        self.counters.pipelines.load(Ordering::Relaxed)
    }

    /// Queue submissions made through this context (kernel passes and read-backs).
    pub fn submits(&self) -> usize {
        self.counters.submits.load(Ordering::Relaxed)
    }

    /// Submits finished command buffers, counted in [`Self::submits`].
    pub fn submit_encoder(&self, enc: wgpu::CommandEncoder) {
        self.counters.submits.fetch_add(1, Ordering::Relaxed);
        self.queue.submit([enc.finish()]);
    }

    /// A storage buffer initialised from `data`.
    pub fn storage<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (bytes.len().max(4) as u64).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, bytes);
        buf
    }

    /// A uniform buffer holding `value`.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: std::mem::size_of::<T>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, bytemuck::bytes_of(value));
        buf
    }

    /// An uninitialised storage buffer of `bytes` bytes that copies fill (device-to-device staging).
    pub fn scratch(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    /// An uninitialised buffer of `bytes` bytes that kernels write and read back, and that the matrix
    /// products may bind as a uniform buffer (at least [`crate::qmatmul::UX_BYTES`]).
    pub fn activations(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.next_multiple_of(16).max(crate::qmatmul::UX_BYTES),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::UNIFORM
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    /// An uninitialised storage buffer of `bytes` bytes that kernels write.
    pub fn output(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    /// Records one dispatch of `id` over `groups` workgroups with `buffers` bound at 0, 1, 2, … and
    /// submits it.
    pub fn dispatch(&self, id: ShaderId, buffers: &[&wgpu::Buffer], groups: (u32, u32, u32)) {
        let bindings: Vec<(u32, &wgpu::Buffer)> = buffers.iter().enumerate().map(|(i, b)| (i as u32, *b)).collect();
        self.submit(&[Pass { id, bindings: &bindings, groups }]);
    }

    /// Records `passes` in order into one command buffer and submits it (one queue submission per
    /// decode step rather than one per kernel).
    pub fn submit(&self, passes: &[Pass]) {
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("chorus") });
        self.record(&mut enc, passes);
        self.submit_encoder(enc);
    }

    /// Records `passes` into `enc` (callers that also copy buffers in the same submission); returns how
    /// many pipelines this created (0 once every entry point used is compiled).
    pub fn record(&self, enc: &mut wgpu::CommandEncoder, passes: &[Pass]) -> usize {
        let mut created = 0;
        for p in passes {
            let (pipeline, new) = self.pipeline_counted(p.id);
            created += usize::from(new);
            let layout = pipeline.get_bind_group_layout(0);
            let entries: Vec<wgpu::BindGroupEntry> = p
                .bindings
                .iter()
                .map(|(i, b)| {
                    // qmatmul_ux's activations are a 64 KB uniform array: a larger buffer is bound by its head.
                    let resource = if matches!(p.id, ShaderId::QMatmulUx(_)) && *i == crate::qmatmul::UX_BINDING {
                        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: b,
                            offset: 0,
                            size: std::num::NonZeroU64::new(crate::qmatmul::UX_BYTES),
                        })
                    } else {
                        b.as_entire_binding()
                    };
                    wgpu::BindGroupEntry { binding: *i, resource }
                })
                .collect();
            let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(p.id.entry_point()),
                layout: &layout,
                entries: &entries,
            });
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(p.id.entry_point()),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(p.groups.0, p.groups.1, p.groups.2);
        }
        created
    }

    /// Copies a buffer back to the host and reinterprets it as `T`s.
    pub async fn read<T: bytemuck::Pod>(&self, src: &wgpu::Buffer, count: usize) -> Result<Vec<T>> {
        let bytes = (count * std::mem::size_of::<T>()) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        enc.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
        self.submit_encoder(enc);
        let slice = staging.slice(..bytes);
        let (tx, rx) = futures_channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        // Natively this drives the map callback; in the browser it is a no-op and the event loop does.
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Readback(e.to_string()))?;
        rx.await
            .map_err(|_| Error::Readback("map callback dropped".into()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let view = slice.get_mapped_range().map_err(|e| Error::Readback(e.to_string()))?;
        let out = bytemuck::cast_slice::<u8, T>(&view[..]).to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}
