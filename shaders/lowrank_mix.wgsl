// lowrank_mix.wgsl: Twin-Merging's per-row low-rank merged matmul without materialising θ*.
//   z[m, j] = w[m, seg[j]] · Σ_i x[m, i] · a[i, j]                       (project: [M, R])
//   y[m, o] = base[m, o] + Σ_{j ∈ part(o)} z[m, j] · b[b_off(part) + (j − col0) · out_n + (o − out0)]  (expand)
// x: [M, in] rows, a: [in, R] (every task's V_t side by side), w: [M, T] per-row task weights,
// seg: [R] task of each column, b: the parts' [n_p, out_p] left factors (U_t S_t)ᵀ back to back, parts: the
// output column ranges of a fused projection (q | k | v) with their column range in z. Row-major f32
// throughout. Reference: chorus_core::reference::lowrank_mix.

struct Params {
    rows: u32,
    inp: u32,
    r: u32,
    tasks: u32,
    out: u32,
    parts: u32,
    _pad0: u32,
    _pad1: u32,
};

struct Part {
    out0: u32,
    out_n: u32,
    col0: u32,
    col_n: u32,
    b_off: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> seg: array<u32>;
@group(0) @binding(5) var<storage, read_write> z: array<f32>;

// One invocation per (row, column of z): the row's dot product with one right-factor column, scaled
// by the row's weight for that column's task.
@compute @workgroup_size(64, 1, 1)
fn project(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let m = gid.y;
    if (j >= params.r || m >= params.rows) { return; }
    var acc = 0.0;
    let xr = m * params.inp;
    for (var i = 0u; i < params.inp; i = i + 1u) {
        acc = acc + x[xr + i] * a[i * params.r + j];
    }
    z[m * params.r + j] = acc * w[m * params.tasks + seg[j]];
}

// The expand pass binds its own slots (6–10) so the two entry points never claim one binding twice.
@group(0) @binding(6) var<storage, read> ez: array<f32>;
@group(0) @binding(7) var<storage, read> b: array<f32>;
@group(0) @binding(8) var<storage, read> parts: array<Part>;
@group(0) @binding(9) var<storage, read> base: array<f32>;
@group(0) @binding(10) var<storage, read_write> y: array<f32>;

// One invocation per output element: the base value plus the row's mixed low-rank contribution from the
// part that owns this output column.
@compute @workgroup_size(64, 1, 1)
fn expand(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    let m = gid.y;
    if (o >= params.out || m >= params.rows) { return; }
    var acc = base[m * params.out + o];
    for (var p = 0u; p < params.parts; p = p + 1u) {
        let pt = parts[p];
        if (o >= pt.out0 && o < pt.out0 + pt.out_n) {
            let col = o - pt.out0;
            let zr = m * params.r + pt.col0;
            for (var j = 0u; j < pt.col_n; j = j + 1u) {
                acc = acc + ez[zr + j] * b[pt.b_off + j * pt.out_n + col];
            }
        }
    }
    y[m * params.out + o] = acc;
}
