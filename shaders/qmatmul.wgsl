// qmatmul.wgsl: y[t][off + r] (+)= W[r] · x[t] (+ bias[r]) for a weight matrix kept on the device in its
// GGUF block format, decoded inside the kernel 32 values at a time and dotted in f32 with up to four
// tokens' activations: decode streams the quantized bytes once, prefill reads each block once per four
// tokens. Formats whose blocks are whole words (Q4_1, Q5_1, Q4_K, Q5_K, floats) are read as the file
// stores them; the others are repacked once on upload into a layout of the same size whose fields are
// word-aligned (chorus_gpu::qmatmul::repack): Q4_0, Q5_0 and Q8_0 as [codes of every block][f16 scales]
// (Q5_0's fifth bits between them), Q6_K as [208-byte bodies][f16 scales].
//
// Layout: a workgroup of WG invocations computes WG · RPI / LANES output rows for TOKS = 4 tokens; each
// row's LANES invocations stride over its 32-value chunks and reduce in workgroup memory. On GPUs LANES
// is 16 and RPI 1 (the lanes of a row read neighbouring blocks). On CPU adapters (lavapipe, SwiftShader)
// LANES is 1, RPI 8 and WG 16: an invocation owns eight rows, so its activation loads are the same for
// every SIMD lane (one scalar load, not a gather) and each serves eight rows; with the activations in a uniform
// buffer (`qmatmul_ux`) lavapipe also skips its per-lane loop for storage loads. Everything per chunk
// is written out (no arrays indexed in loops), because lavapipe keeps such arrays in memory.
// Grid: (ceil(rows · LANES / (WG · RPI)), 1, ceil(n / 4)). FMT, LANES, RPI and WG are pipeline-overridable
// constants (one pipeline per format and adapter kind, branches folded).
// Reference: chorus_core::reference::qmatmul (dequantize, f32 dot).

override FMT: u32 = 0u;
override LANES: u32 = 16u;
// Output rows per invocation (1, 4 or 8; 8 on CPU adapters: each activation load serves eight rows).
override RPI: u32 = 1u;

const F_F32: u32 = 0u;
const F_F16: u32 = 1u;
const F_BF16: u32 = 2u;
const F_Q4_0: u32 = 3u;
const F_Q4_1: u32 = 4u;
const F_Q5_0: u32 = 5u;
const F_Q5_1: u32 = 6u;
const F_Q8_0: u32 = 7u;
const F_Q4_K: u32 = 8u;
const F_Q5_K: u32 = 9u;
const F_Q6_K: u32 = 10u;

struct Params {
    // Rows of W in this buffer, values per row.
    rows: u32,
    cols: u32,
    // Floats between consecutive tokens of x and of y; the first column of y this matrix writes.
    x_stride: u32,
    y_stride: u32,
    y_offset: u32,
    // Bit 0: add into y (a residual); bit 1: add bias[r].
    flags: u32,
    // Word offsets of a repacked layout's second and third regions.
    aux0: u32,
    aux1: u32,
};

struct Count {
    // Tokens in this pass.
    n: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> count: Count;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
// qmatmul_ux: the activations in a uniform buffer (at most 64 KB).
@group(0) @binding(6) var<uniform> xu: array<vec4<f32>, 4096>;

// Invocations per workgroup (16 on CPU adapters: small matrices still spread over every thread).
override WG: u32 = 64u;
const TOKS: u32 = 4u;

var<workgroup> partial: array<f32, 256>;

// Signed byte k (0..3) of a word.
fn sbyte(v: u32, k: u32) -> f32 {
    return f32(bitcast<i32>(v << (24u - 8u * k)) >> 24u);
}

fn nib(v: u32, k: u32) -> f32 {
    return f32((v >> (4u * k)) & 0xfu);
}

fn bytes4(q: u32) -> vec4<f32> {
    return vec4<f32>(vec4<u32>(q & 0xffu, (q >> 8u) & 0xffu, (q >> 16u) & 0xffu, q >> 24u));
}

// The f16 scale of block g in a region of packed halves starting at word `at`.
fn half_at(at: u32, g: u32) -> f32 {
    let d = unpack2x16float(w[at + g / 2u]);
    return select(d.x, d.y, (g & 1u) == 1u);
}

// Byte i (0..11) of the three scale words of a Q4_K/Q5_K super-block.
fn sbyte_k(s: vec3<u32>, i: u32) -> u32 {
    return (s[i / 4u] >> (8u * (i % 4u))) & 0xffu;
}

// 6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block.
fn scale_min_k4(s: vec3<u32>, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(sbyte_k(s, j) & 63u), f32(sbyte_k(s, j + 4u) & 63u));
    }
    let a = sbyte_k(s, j + 4u);
    let sc = (a & 0xfu) | ((sbyte_k(s, j - 4u) >> 6u) << 4u);
    let mn = (a >> 4u) | ((sbyte_k(s, j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(mn));
}

// Values 32c .. 32c + 31 of a row, as eight vec4s.
struct Chunk {
    v0: vec4<f32>,
    v1: vec4<f32>,
    v2: vec4<f32>,
    v3: vec4<f32>,
    v4: vec4<f32>,
    v5: vec4<f32>,
    v6: vec4<f32>,
    v7: vec4<f32>,
};

fn lo4(q: u32) -> vec4<f32> {
    return vec4<f32>(nib(q, 0u), nib(q, 2u), nib(q, 4u), nib(q, 6u));
}

fn hi4(q: u32) -> vec4<f32> {
    return vec4<f32>(nib(q, 1u), nib(q, 3u), nib(q, 5u), nib(q, 7u));
}

// Q5's values j..j+3 (low nibbles, fifth bits from bit j of qh) and j+16..j+19 (high nibbles).
fn q5lo(q: u32, qh: u32, j: u32) -> vec4<f32> {
    let h = (vec4<u32>(qh) >> vec4<u32>(j, j + 1u, j + 2u, j + 3u)) & vec4<u32>(1u);
    return lo4(q) + vec4<f32>(h) * 16.0;
}

fn q5hi(q: u32, qh: u32, j: u32) -> vec4<f32> {
    let h = (vec4<u32>(qh) >> vec4<u32>(j + 16u, j + 17u, j + 18u, j + 19u)) & vec4<u32>(1u);
    return hi4(q) + vec4<f32>(h) * 16.0;
}

fn f32x4(o: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<f32>(w[o]), bitcast<f32>(w[o + 1u]), bitcast<f32>(w[o + 2u]), bitcast<f32>(w[o + 3u]));
}

fn f16x4(o: u32) -> vec4<f32> {
    if (FMT == F_BF16) {
        let a = w[o];
        let b = w[o + 1u];
        return vec4<f32>(bitcast<f32>(a << 16u), bitcast<f32>(a & 0xffff0000u), bitcast<f32>(b << 16u),
                         bitcast<f32>(b & 0xffff0000u));
    }
    return vec4<f32>(unpack2x16float(w[o]), unpack2x16float(w[o + 1u]));
}

fn q8x4(q: u32) -> vec4<f32> {
    return vec4<f32>(sbyte(q, 0u), sbyte(q, 1u), sbyte(q, 2u), sbyte(q, 3u));
}

// Q4_K/Q5_K: four 4-bit codes (shifted by `sh`) with the fifth bits of Q5_K from word `hw` (bit j).
fn qk4(q: u32, sh: u32, hw: u32, j: u32) -> vec4<f32> {
    var v = (q >> sh) & 0x0f0f0f0fu;
    if (FMT == F_Q5_K) {
        v = v | (((hw >> j) & 0x01010101u) << 4u);
    }
    return bytes4(v);
}

fn q6x4(l: u32, h: u32, sl: u32, sh: u32) -> vec4<f32> {
    return bytes4(((l >> sl) & 0x0f0f0f0fu) | (((h >> sh) & 0x03030303u) << 4u)) - 32.0;
}

fn chunk(r: u32, c: u32) -> Chunk {
    let nb = p.cols / 32u;
    let g = r * nb + c;
    var o: Chunk;
    switch FMT {
        case 0u: { // F32
            let b = r * p.cols + 32u * c;
            o = Chunk(f32x4(b), f32x4(b + 4u), f32x4(b + 8u), f32x4(b + 12u), f32x4(b + 16u), f32x4(b + 20u),
                      f32x4(b + 24u), f32x4(b + 28u));
        }
        case 1u, 2u: { // F16, BF16
            let b = r * (p.cols / 2u) + 16u * c;
            o = Chunk(f16x4(b), f16x4(b + 2u), f16x4(b + 4u), f16x4(b + 6u), f16x4(b + 8u), f16x4(b + 10u),
                      f16x4(b + 12u), f16x4(b + 14u));
        }
        case 3u, 4u: { // Q4_0: d·(q − 8) (repacked); Q4_1: d·q + m. Low nibbles are values 0..15, high 16..31.
            var d: f32;
            var m: f32;
            var qs: u32;
            if (FMT == F_Q4_1) {
                let dm = unpack2x16float(w[5u * g]);
                d = dm.x;
                m = dm.y;
                qs = 5u * g + 1u;
            } else {
                d = half_at(p.aux0, g);
                m = -8.0 * d;
                qs = 4u * g;
            }
            let q0 = w[qs];
            let q1 = w[qs + 1u];
            let q2 = w[qs + 2u];
            let q3 = w[qs + 3u];
            o = Chunk(lo4(q0) * d + m, lo4(q1) * d + m, lo4(q2) * d + m, lo4(q3) * d + m, hi4(q0) * d + m,
                      hi4(q1) * d + m, hi4(q2) * d + m, hi4(q3) * d + m);
        }
        case 5u, 6u: { // Q5_0: d·(q − 16) (repacked); Q5_1: d·q + m; the fifth bits in one word.
            var d: f32;
            var m: f32;
            var qs: u32;
            var qh: u32;
            if (FMT == F_Q5_1) {
                let dm = unpack2x16float(w[6u * g]);
                d = dm.x;
                m = dm.y;
                qh = w[6u * g + 1u];
                qs = 6u * g + 2u;
            } else {
                d = half_at(p.aux1, g);
                m = -16.0 * d;
                qh = w[p.aux0 + g];
                qs = 4u * g;
            }
            let q0 = w[qs];
            let q1 = w[qs + 1u];
            let q2 = w[qs + 2u];
            let q3 = w[qs + 3u];
            o = Chunk(q5lo(q0, qh, 0u) * d + m, q5lo(q1, qh, 4u) * d + m, q5lo(q2, qh, 8u) * d + m,
                      q5lo(q3, qh, 12u) * d + m, q5hi(q0, qh, 0u) * d + m, q5hi(q1, qh, 4u) * d + m,
                      q5hi(q2, qh, 8u) * d + m, q5hi(q3, qh, 12u) * d + m);
        }
        case 7u: { // Q8_0 (repacked): d·q, q signed bytes.
            let d = half_at(p.aux0, g);
            let b = 8u * g;
            o = Chunk(q8x4(w[b]) * d, q8x4(w[b + 1u]) * d, q8x4(w[b + 2u]) * d, q8x4(w[b + 3u]) * d,
                      q8x4(w[b + 4u]) * d, q8x4(w[b + 5u]) * d, q8x4(w[b + 6u]) * d, q8x4(w[b + 7u]) * d);
        }
        case 8u, 9u: { // Q4_K / Q5_K: sub-block j of a 256-value super-block, d·sc·q − dmin·m.
            let sb = r * (nb / 8u) + c / 8u;
            let j = c % 8u;
            let b = sb * select(36u, 44u, FMT == F_Q5_K);
            let dd = unpack2x16float(w[b]);
            let sm = scale_min_k4(vec3<u32>(w[b + 1u], w[b + 2u], w[b + 3u]), j);
            let a = dd.x * sm.x;
            let mn = dd.y * sm.y;
            let qs = b + select(4u, 12u, FMT == F_Q5_K) + 8u * (j / 2u);
            let sh = 4u * (j & 1u);
            let hb = b + 4u;
            var h0 = 0u; var h1 = 0u; var h2 = 0u; var h3 = 0u; var h4 = 0u; var h5 = 0u; var h6 = 0u; var h7 = 0u;
            if (FMT == F_Q5_K) {
                h0 = w[hb]; h1 = w[hb + 1u]; h2 = w[hb + 2u]; h3 = w[hb + 3u];
                h4 = w[hb + 4u]; h5 = w[hb + 5u]; h6 = w[hb + 6u]; h7 = w[hb + 7u];
            }
            o = Chunk(qk4(w[qs], sh, h0, j) * a - mn, qk4(w[qs + 1u], sh, h1, j) * a - mn,
                      qk4(w[qs + 2u], sh, h2, j) * a - mn, qk4(w[qs + 3u], sh, h3, j) * a - mn,
                      qk4(w[qs + 4u], sh, h4, j) * a - mn, qk4(w[qs + 5u], sh, h5, j) * a - mn,
                      qk4(w[qs + 6u], sh, h6, j) * a - mn, qk4(w[qs + 7u], sh, h7, j) * a - mn);
        }
        default: { // Q6_K (repacked): quarter k4 of half n of a super-block, d·sc·(q − 32).
            let sb = r * (nb / 8u) + c / 8u;
            let j = c % 8u;
            let b = sb * 52u;
            let n = j / 4u;
            let k4 = j % 4u;
            let d = half_at(p.aux0, sb);
            let ql = b + 16u * n + 8u * (k4 & 1u);
            let qh = b + 32u + 8u * n;
            let sl = 4u * (k4 >> 1u);
            let sh = 2u * k4;
            let sw = w[b + 48u + 2u * n + k4 / 2u];
            let sbit = 16u * (k4 & 1u);
            let s0 = d * f32(bitcast<i32>(sw << (24u - sbit)) >> 24u);
            let s1 = d * f32(bitcast<i32>(sw << (16u - sbit)) >> 24u);
            o = Chunk(q6x4(w[ql], w[qh], sl, sh) * s0, q6x4(w[ql + 1u], w[qh + 1u], sl, sh) * s0,
                      q6x4(w[ql + 2u], w[qh + 2u], sl, sh) * s0, q6x4(w[ql + 3u], w[qh + 3u], sl, sh) * s0,
                      q6x4(w[ql + 4u], w[qh + 4u], sl, sh) * s1, q6x4(w[ql + 5u], w[qh + 5u], sl, sh) * s1,
                      q6x4(w[ql + 6u], w[qh + 6u], sl, sh) * s1, q6x4(w[ql + 7u], w[qh + 7u], sl, sh) * s1);
        }
    }
    return o;
}

fn dotc(a: Chunk, b: Chunk) -> f32 {
    let s = a.v0 * b.v0 + a.v1 * b.v1 + a.v2 * b.v2 + a.v3 * b.v3 + a.v4 * b.v4 + a.v5 * b.v5 + a.v6 * b.v6
        + a.v7 * b.v7;
    return s.x + s.y + s.z + s.w;
}

// Activations 8i .. 8i + 7 (vec4s) of the storage or the uniform buffer.
fn xs_at(i: u32) -> Chunk {
    return Chunk(x[i], x[i + 1u], x[i + 2u], x[i + 3u], x[i + 4u], x[i + 5u], x[i + 6u], x[i + 7u]);
}

fn xu_at(i: u32) -> Chunk {
    return Chunk(xu[i], xu[i + 1u], xu[i + 2u], xu[i + 3u], xu[i + 4u], xu[i + 5u], xu[i + 6u], xu[i + 7u]);
}

fn store(r: u32, t: u32, v: f32) {
    var s = v;
    if ((p.flags & 2u) != 0u) {
        s += bias[r];
    }
    let yi = t * p.y_stride + p.y_offset + r;
    if ((p.flags & 1u) != 0u) {
        y[yi] = y[yi] + s;
    } else {
        y[yi] = s;
    }
}

// The dots of one row's chunk with up to four tokens' activations (components: tokens).
fn dots(w: Chunk, x0: Chunk, x1: Chunk, x2: Chunk, x3: Chunk, nt: u32) -> vec4<f32> {
    var s = vec4<f32>(dotc(w, x0), 0.0, 0.0, 0.0);
    if (nt > 1u) {
        s.y = dotc(w, x1);
    }
    if (nt > 2u) {
        s.z = dotc(w, x2);
    }
    if (nt > 3u) {
        s.w = dotc(w, x3);
    }
    return s;
}

// Per row of the invocation (up to 8), the sums of up to four tokens.
struct Acc {
    a0: vec4<f32>,
    a1: vec4<f32>,
    a2: vec4<f32>,
    a3: vec4<f32>,
    a4: vec4<f32>,
    a5: vec4<f32>,
    a6: vec4<f32>,
    a7: vec4<f32>,
};

// The invocation's row i (rows past the end compute row rows − 1 and store nothing: control flow stays
// uniform, so loads whose address is the same for every invocation stay scalar on CPU adapters).
fn row_of(wg: vec3<u32>, lid: vec3<u32>, i: u32) -> u32 {
    return min((wg.x * (WG / LANES) + lid.x / LANES) * RPI + i, p.rows - 1u);
}

// One chunk of every row of the invocation: each row decoded and dotted right away (so only one row's
// values and the activations are live), each activation load shared by the RPI rows.
fn step(wg: vec3<u32>, lid: vec3<u32>, c: u32, x0: Chunk, x1: Chunk, x2: Chunk, x3: Chunk, nt: u32, acc: ptr<function, Acc>) {
    (*acc).a0 += dots(chunk(row_of(wg, lid, 0u), c), x0, x1, x2, x3, nt);
    if (RPI > 1u) {
        (*acc).a1 += dots(chunk(row_of(wg, lid, 1u), c), x0, x1, x2, x3, nt);
        (*acc).a2 += dots(chunk(row_of(wg, lid, 2u), c), x0, x1, x2, x3, nt);
        (*acc).a3 += dots(chunk(row_of(wg, lid, 3u), c), x0, x1, x2, x3, nt);
    }
    if (RPI > 4u) {
        (*acc).a4 += dots(chunk(row_of(wg, lid, 4u), c), x0, x1, x2, x3, nt);
        (*acc).a5 += dots(chunk(row_of(wg, lid, 5u), c), x0, x1, x2, x3, nt);
        (*acc).a6 += dots(chunk(row_of(wg, lid, 6u), c), x0, x1, x2, x3, nt);
        (*acc).a7 += dots(chunk(row_of(wg, lid, 7u), c), x0, x1, x2, x3, nt);
    }
}

fn store_row(wg: vec3<u32>, lid: vec3<u32>, i: u32, a: vec4<f32>, nt: u32) {
    let r = (wg.x * (WG / LANES) + lid.x / LANES) * RPI + i;
    let t0 = wg.z * TOKS;
    if (r < p.rows) {
        store(r, t0, a.x);
        if (nt > 1u) { store(r, t0 + 1u, a.y); }
        if (nt > 2u) { store(r, t0 + 2u, a.z); }
        if (nt > 3u) { store(r, t0 + 3u, a.w); }
    }
}

fn finish(wg: vec3<u32>, lid: vec3<u32>, acc_in: Acc, nt: u32) {
    var acc = acc_in;
    let lane = lid.x % LANES;
    if (LANES > 1u) {
        // RPI is 1 here: one row per LANES invocations, summed in workgroup memory.
        partial[lid.x] = acc.a0.x;
        partial[WG + lid.x] = acc.a0.y;
        partial[2u * WG + lid.x] = acc.a0.z;
        partial[3u * WG + lid.x] = acc.a0.w;
        workgroupBarrier();
        if (lane == 0u) {
            var s = vec4<f32>(0.0);
            for (var l = 0u; l < LANES; l++) {
                let i = lid.x + l;
                s += vec4<f32>(partial[i], partial[WG + i], partial[2u * WG + i], partial[3u * WG + i]);
            }
            acc.a0 = s;
        }
    }
    if (lane != 0u) {
        return;
    }
    store_row(wg, lid, 0u, acc.a0, nt);
    if (RPI > 1u) {
        store_row(wg, lid, 1u, acc.a1, nt);
        store_row(wg, lid, 2u, acc.a2, nt);
        store_row(wg, lid, 3u, acc.a3, nt);
    }
    if (RPI > 4u) {
        store_row(wg, lid, 4u, acc.a4, nt);
        store_row(wg, lid, 5u, acc.a5, nt);
        store_row(wg, lid, 6u, acc.a6, nt);
        store_row(wg, lid, 7u, acc.a7, nt);
    }
}

fn zero_acc() -> Acc {
    let z = vec4<f32>(0.0);
    return Acc(z, z, z, z, z, z, z, z);
}

@compute @workgroup_size(WG)
fn qmatmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t0 = wg.z * TOKS;
    let nt = min(TOKS, count.n - min(count.n, t0));
    let xs = p.x_stride / 4u;
    let xb = t0 * xs;
    var acc = zero_acc();
    for (var c = lid.x % LANES; c < p.cols / 32u; c += LANES) {
        let xi = xb + 8u * c;
        let x0 = xs_at(xi);
        var x1 = x0;
        var x2 = x0;
        var x3 = x0;
        if (nt > 1u) { x1 = xs_at(xi + xs); }
        if (nt > 2u) { x2 = xs_at(xi + 2u * xs); }
        if (nt > 3u) { x3 = xs_at(xi + 3u * xs); }
        step(wg, lid, c, x0, x1, x2, x3, nt, &acc);
    }
    finish(wg, lid, acc, nt);
}

// The same with the activations read from `xu` (CPU adapters, when they fit in 64 KB).
@compute @workgroup_size(WG)
fn qmatmul_ux(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t0 = wg.z * TOKS;
    let nt = min(TOKS, count.n - min(count.n, t0));
    let xs = p.x_stride / 4u;
    let xb = t0 * xs;
    var acc = zero_acc();
    for (var c = 0u; c < p.cols / 32u; c++) {
        let xi = xb + 8u * c;
        let x0 = xu_at(xi);
        var x1 = x0;
        var x2 = x0;
        var x3 = x0;
        if (nt > 1u) { x1 = xu_at(xi + xs); }
        if (nt > 2u) { x2 = xu_at(xi + 2u * xs); }
        if (nt > 3u) { x3 = xu_at(xi + 3u * xs); }
        step(wg, lid, c, x0, x1, x2, x3, nt, &acc);
    }
    finish(wg, lid, acc, nt);
}
