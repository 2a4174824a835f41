// decoder.wgsl: the non-matmul steps of the device decoder (chorus_gpu::decoder), for n tokens of a
// batch whose rows each own a region of a preallocated KV cache. Every shape that changes while
// decoding (tokens in the pass, cache capacity) is a uniform value, so one pipeline per entry point
// serves every step. References: chorus_core::reference::{rms_norm, rope, attention, silu_mul}.

struct Dims {
    // Tokens in this pass; floats per token of the hidden state, the queries, the keys/values and the MLP.
    n: u32,
    hidden: u32,
    qd: u32,
    kvd: u32,
    ffn: u32,
    head_dim: u32,
    heads: u32,
    kv_heads: u32,
    // Positions each batch row can hold in the cache; 1 for adjacent RoPE pairs (Llama GGUF rows).
    cap: u32,
    interleaved: u32,
    eps: f32,
    scale: f32,
};

@group(0) @binding(0) var<uniform> dims: Dims;

// ---- rms_norm: out[t] = x[t] / sqrt(mean(x[t]²) + eps) · g. Grid (n, 1, 1).
@group(0) @binding(1) var<storage, read> norm_x: array<f32>;
@group(0) @binding(2) var<storage, read> norm_g: array<f32>;
@group(0) @binding(3) var<storage, read_write> norm_out: array<f32>;

var<workgroup> red: array<f32, 64>;

// Sum of `v` over the 64 invocations (every invocation gets it).
fn wg_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn wg_max(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn rms_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = dims.hidden;
    let o = wg.x * h;
    var ss = 0.0;
    for (var i = lid.x; i < h; i += 64u) {
        let v = norm_x[o + i];
        ss += v * v;
    }
    let tot = wg_sum(ss, lid.x);
    let s = 1.0 / sqrt(tot / f32(h) + dims.eps);
    for (var i = lid.x; i < h; i += 64u) {
        norm_out[o + i] = norm_x[o + i] * s * norm_g[i];
    }
}

// ---- rope_cache: rotates every query and key head of token t by its position (cos/sin from the host,
// [n, head_dim / 2]) and writes the key and value into the token's cache slot (row, pos). Grid (n, 1, 1).
@group(0) @binding(4) var<storage, read_write> rq: array<f32>;
@group(0) @binding(5) var<storage, read> rk: array<f32>;
@group(0) @binding(6) var<storage, read> rv: array<f32>;
@group(0) @binding(7) var<storage, read> rcs: array<vec2<f32>>;
// Per token: (batch row, position).
@group(0) @binding(8) var<storage, read> rtok: array<vec2<u32>>;
@group(0) @binding(9) var<storage, read_write> rkc: array<f32>;
@group(0) @binding(10) var<storage, read_write> rvc: array<f32>;

fn pair(e: u32, hd: u32) -> vec2<u32> {
    if (dims.interleaved != 0u) {
        return vec2<u32>(2u * e, 2u * e + 1u);
    }
    return vec2<u32>(e, e + hd / 2u);
}

@compute @workgroup_size(64)
fn rope_cache(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = wg.x;
    let hd = dims.head_dim;
    let half = hd / 2u;
    let tok = rtok[t];
    let slot = (tok.x * dims.cap + tok.y) * dims.kvd;
    for (var i = lid.x; i < dims.heads * half; i += 64u) {
        let e = i % half;
        let base = t * dims.qd + (i / half) * hd;
        let ab = pair(e, hd);
        let cs = rcs[t * half + e];
        let x1 = rq[base + ab.x];
        let x2 = rq[base + ab.y];
        rq[base + ab.x] = x1 * cs.x - x2 * cs.y;
        rq[base + ab.y] = x2 * cs.x + x1 * cs.y;
    }
    for (var i = lid.x; i < dims.kv_heads * half; i += 64u) {
        let e = i % half;
        let hb = (i / half) * hd;
        let base = t * dims.kvd + hb;
        let ab = pair(e, hd);
        let cs = rcs[t * half + e];
        let x1 = rk[base + ab.x];
        let x2 = rk[base + ab.y];
        rkc[slot + hb + ab.x] = x1 * cs.x - x2 * cs.y;
        rkc[slot + hb + ab.y] = x2 * cs.x + x1 * cs.y;
    }
    for (var i = lid.x; i < dims.kvd; i += 64u) {
        rvc[slot + i] = rv[t * dims.kvd + i];
    }
}

// ---- attention: causal softmax attention of query head h of token t over its row's cached positions
// 0..=pos (GQA: the KV head h / (heads / kv_heads)). Scores go through `att_s` ([n·heads, cap]).
// Grid (heads, n, 1).
@group(0) @binding(11) var<storage, read> aq: array<f32>;
@group(0) @binding(12) var<storage, read> akc: array<f32>;
@group(0) @binding(13) var<storage, read> avc: array<f32>;
@group(0) @binding(14) var<storage, read> atok: array<vec2<u32>>;
@group(0) @binding(15) var<storage, read_write> att_s: array<f32>;
@group(0) @binding(16) var<storage, read_write> att_out: array<f32>;

var<workgroup> qv: array<f32, 256>;

@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let h = wg.x;
    let t = wg.y;
    let hd = dims.head_dim;
    let tok = atok[t];
    let len = tok.y + 1u;
    let kvh = h / (dims.heads / dims.kv_heads);
    let row0 = tok.x * dims.cap;
    let sb = (t * dims.heads + h) * dims.cap;
    for (var d = lid.x; d < hd; d += 64u) {
        qv[d] = aq[t * dims.qd + h * hd + d];
    }
    workgroupBarrier();
    var mx = -3.4e38;
    for (var j = lid.x; j < len; j += 64u) {
        let kb = (row0 + j) * dims.kvd + kvh * hd;
        var s = 0.0;
        for (var d = 0u; d < hd; d++) {
            s = fma(qv[d], akc[kb + d], s);
        }
        s *= dims.scale;
        att_s[sb + j] = s;
        mx = max(mx, s);
    }
    let m = wg_max(mx, lid.x);
    var sum = 0.0;
    for (var j = lid.x; j < len; j += 64u) {
        let e = exp(att_s[sb + j] - m);
        att_s[sb + j] = e;
        sum += e;
    }
    let inv = 1.0 / wg_sum(sum, lid.x);
    storageBarrier();
    for (var d = lid.x; d < hd; d += 64u) {
        var acc = 0.0;
        for (var j = 0u; j < len; j++) {
            acc = fma(att_s[sb + j], avc[(row0 + j) * dims.kvd + kvh * hd + d], acc);
        }
        att_out[t * dims.qd + h * hd + d] = acc * inv;
    }
}

// ---- silu_mul: gate = silu(gate) · up over n·ffn values. Grid (ceil(n·ffn / 256), 1, 1).
@group(0) @binding(17) var<storage, read_write> sg: array<f32>;
@group(0) @binding(18) var<storage, read> su: array<f32>;

@compute @workgroup_size(256)
fn silu_mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = gid.x + gid.y * nw.x * 256u;
    if (i < dims.n * dims.ffn) {
        let g = sg[i];
        sg[i] = g / (1.0 + exp(-g)) * su[i];
    }
}
