// row_stats.wgsl: per-row max, argmax (lowest index on ties, NaN skipped) and log-sum-exp of a
// row-major [rows, cols] f32 matrix. One workgroup of 256 invocations per row: a strided scan, then a
// tree reduction in workgroup memory. Reference: chorus_core::reference::row_stats.

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
};

struct RowOut {
    max: f32,
    argmax: u32,
    logsumexp: f32,
    _pad: u32,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<RowOut>;

const WG: u32 = 256u;
const NO_INDEX: u32 = 0xffffffffu;

var<workgroup> s_max: array<f32, 256>;
var<workgroup> s_arg: array<u32, 256>;
var<workgroup> s_sum: array<f32, 256>;

// True when candidate (v, i) beats (bv, bi): larger value, or equal value at a lower index.
fn better(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    if (i == NO_INDEX) { return false; }
    if (bi == NO_INDEX) { return true; }
    return v > bv || (v == bv && i < bi);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.x;
    let t = lid.x;
    if (row >= params.rows) { return; }
    let base = row * params.cols;

    var bv = 0.0;
    var bi = NO_INDEX;
    for (var c = t; c < params.cols; c = c + WG) {
        let v = x[base + c];
        if (v == v && better(v, c, bv, bi)) { bv = v; bi = c; }
    }
    s_max[t] = bv;
    s_arg[t] = bi;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (t < stride && better(s_max[t + stride], s_arg[t + stride], s_max[t], s_arg[t])) {
            s_max[t] = s_max[t + stride];
            s_arg[t] = s_arg[t + stride];
        }
        workgroupBarrier();
    }
    let m = s_max[0];
    let arg = s_arg[0];
    workgroupBarrier();

    var acc = 0.0;
    for (var c = t; c < params.cols; c = c + WG) {
        let v = x[base + c];
        if (v == v) { acc = acc + exp(v - m); }
    }
    s_sum[t] = acc;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (t < stride) { s_sum[t] = s_sum[t] + s_sum[t + stride]; }
        workgroupBarrier();
    }
    if (t == 0u) {
        var o: RowOut;
        o.max = m;
        o.argmax = select(arg, 0u, arg == NO_INDEX);
        o.logsumexp = m + log(s_sum[0]);
        o._pad = 0u;
        out[row] = o;
    }
}
