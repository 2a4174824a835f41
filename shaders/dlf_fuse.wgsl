// dlf_fuse.wgsl: one Dynamic Logit Fusion step for B rows, T experts, V tokens and C candidate α
// vectors, in four entry points recorded into one command buffer:
//   prepare   (V/256 × B groups)  support mask; sanitised L, S and deltas d_t = E_t − S
//   constants (T × B groups)      LSE(L), E_P[d_t], KL(Q_t‖Q), KL(Q‖Q_t)
//   losses    (C × B groups)      ℒ(α_c) by the closed forms KL(P̃‖P) = E_P̃[D] − Λ, KL(P‖P̃) = Λ − E_P[D]
//   select    (B groups)          first strict minimum over c, fused logits, greedy token
// Banned tokens (any model's logit non-finite) become BANNED in the sanitised L and S and 0 in d_t,
// so no later pass needs a branch for them; they are −∞ in the fused logits.
// Reference: chorus_core::fusion (ReferenceEvaluator, scan, fused_logits).

struct Params {
    rows: u32,
    vocab: u32,
    experts: u32,
    cands: u32,
    stride_large: u32,
    stride_base: u32,
    stride_expert: u32,
    // 0: fuse; 1: the first expert's logits alone (expert-only baseline).
    mode: u32,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> large: array<f32>;
@group(0) @binding(2) var<storage, read> base: array<f32>;
// [T][B][stride_expert]
@group(0) @binding(3) var<storage, read> experts: array<f32>;
// [C][T]
@group(0) @binding(4) var<storage, read> cands: array<f32>;
@group(0) @binding(5) var<storage, read_write> work_l: array<f32>;
// [T][B][V]
@group(0) @binding(6) var<storage, read_write> work_d: array<f32>;
@group(0) @binding(7) var<storage, read_write> work_s: array<f32>;
// [B][T] × (lse_large, E_P[d_t], KL(Q_t‖Q), KL(Q‖Q_t))
@group(0) @binding(8) var<storage, read_write> consts: array<vec4<f32>>;
// [B][C] × (loss, KL(P̃‖P), KL(P‖P̃), 0)
@group(0) @binding(9) var<storage, read_write> losses: array<vec4<f32>>;
// [B] × (chosen candidate, greedy token, empty-support flag, 0)
@group(0) @binding(10) var<storage, read_write> choice: array<vec4<u32>>;
// [B][V]
@group(0) @binding(11) var<storage, read_write> fused: array<f32>;

const WG: u32 = 256u;
const BANNED: f32 = -1.0e30;
const NO_INDEX: u32 = 0xffffffffu;

var<workgroup> red: array<f32, 256>;
var<workgroup> red_i: array<u32, 256>;
var<workgroup> best_c: u32;

fn finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// A runtime value on purpose: browsers' WGSL compilers (Tint) reject -inf produced by a constant
// expression ("value -inf cannot be represented as 'f32'"), naga does not.
fn neg_inf() -> f32 {
    var bits = 0xff800000u;
    return bitcast<f32>(bits);
}

// Workgroup-wide sum and max; every invocation must call them (uniform control flow).
fn wg_sum(t: u32, x: f32) -> f32 {
    red[t] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (t < s) { red[t] = red[t] + red[t + s]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn wg_max(t: u32, x: f32) -> f32 {
    red[t] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (t < s) { red[t] = max(red[t], red[t + s]); }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// D = Σ_t α_t d_t of candidate c at token v of row b (zero weights skipped).
fn shift(c: u32, b: u32, v: u32) -> f32 {
    let T = params.experts;
    var dv = 0.0;
    for (var e = 0u; e < T; e = e + 1u) {
        let a = cands[c * T + e];
        if (a != 0.0) { dv = dv + a * work_d[(e * params.rows + b) * params.vocab + v]; }
    }
    return dv;
}

@compute @workgroup_size(256)
fn prepare(@builtin(global_invocation_id) gid: vec3<u32>) {
    let v = gid.x;
    let b = gid.y;
    let V = params.vocab;
    let B = params.rows;
    if (v >= V || b >= B) { return; }
    let l = large[b * params.stride_large + v];
    let s = base[b * params.stride_base + v];
    var ok = finite(l) && finite(s);
    for (var t = 0u; t < params.experts; t = t + 1u) {
        ok = ok && finite(experts[(t * B + b) * params.stride_expert + v]);
    }
    work_l[b * V + v] = select(BANNED, l, ok);
    work_s[b * V + v] = select(BANNED, s, ok);
    for (var t = 0u; t < params.experts; t = t + 1u) {
        let e = experts[(t * B + b) * params.stride_expert + v];
        work_d[(t * B + b) * V + v] = select(0.0, e - s, ok);
    }
}

@compute @workgroup_size(256)
fn constants(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let te = wg.x;
    let b = wg.y;
    let t = lid.x;
    let V = params.vocab;
    let row = b * V;
    let drow = (te * params.rows + b) * V;

    var ml = BANNED;
    var ms = BANNED;
    var mt = BANNED;
    for (var v = t; v < V; v = v + WG) {
        let s = work_s[row + v];
        ml = max(ml, work_l[row + v]);
        ms = max(ms, s);
        mt = max(mt, s + work_d[drow + v]);
    }
    ml = wg_max(t, ml);
    ms = wg_max(t, ms);
    mt = wg_max(t, mt);

    var sp = 0.0;
    var spd = 0.0;
    var sq = 0.0;
    var sqd = 0.0;
    var st = 0.0;
    var stt = 0.0;
    for (var v = t; v < V; v = v + WG) {
        let d = work_d[drow + v];
        let s = work_s[row + v];
        let ep = exp(work_l[row + v] - ml);
        let eq = exp(s - ms);
        let et = exp(s + d - mt);
        sp = sp + ep;
        spd = spd + ep * d;
        sq = sq + eq;
        sqd = sqd + eq * d;
        st = st + et;
        stt = stt + et * d;
    }
    sp = wg_sum(t, sp);
    spd = wg_sum(t, spd);
    sq = wg_sum(t, sq);
    sqd = wg_sum(t, sqd);
    st = wg_sum(t, st);
    stt = wg_sum(t, stt);
    if (t == 0u) {
        let lse_l = ml + log(sp);
        let gap = (mt + log(st)) - (ms + log(sq));
        consts[b * params.experts + te] =
            vec4<f32>(lse_l, spd / sp, max(stt / st - gap, 0.0), max(gap - sqd / sq, 0.0));
    }
}

@compute @workgroup_size(256)
fn losses_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wg.x;
    let b = wg.y;
    let t = lid.x;
    let V = params.vocab;
    let B = params.rows;
    let T = params.experts;
    let row = b * V;

    var nonzero = false;
    var eshift = 0.0;
    for (var e = 0u; e < T; e = e + 1u) {
        let a = cands[c * T + e];
        nonzero = nonzero || a != 0.0;
        eshift = eshift + a * consts[b * T + e].y;
    }
    var kf = 0.0;
    var kr = 0.0;
    // α = 0 gives P̃ = P exactly: both KLs are 0 without a pass (as in the CPU evaluators).
    if (nonzero) {
        var m = BANNED;
        for (var v = t; v < V; v = v + WG) {
            let dv = shift(c, b, v);
            m = max(m, work_l[row + v] + dv);
        }
        m = wg_max(t, m);
        var se = 0.0;
        var sed = 0.0;
        for (var v = t; v < V; v = v + WG) {
            let dv = shift(c, b, v);
            let ez = exp(work_l[row + v] + dv - m);
            se = se + ez;
            sed = sed + ez * dv;
        }
        se = wg_sum(t, se);
        sed = wg_sum(t, sed);
        let lam = m + log(se) - consts[b * T].x;
        kf = max(sed / se - lam, 0.0);
        kr = max(lam - eshift, 0.0);
    }
    if (t == 0u) {
        var loss = 0.0;
        for (var e = 0u; e < T; e = e + 1u) {
            let k = consts[b * T + e];
            loss = loss + (kf - k.z) * (kf - k.z) + (kr - k.w) * (kr - k.w);
        }
        losses[b * params.cands + c] = vec4<f32>(loss, kf, kr, 0.0);
    }
}

@compute @workgroup_size(256)
fn select_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wg.x;
    let t = lid.x;
    let V = params.vocab;
    let B = params.rows;
    let T = params.experts;
    let row = b * V;
    if (t == 0u) {
        // Scan order; strict < keeps the first minimum, and a NaN loss never wins over a number.
        var bi = 0u;
        var bl = losses[b * params.cands].x;
        for (var c = 1u; c < params.cands; c = c + 1u) {
            let l = losses[b * params.cands + c].x;
            if (l < bl || (bl != bl && l == l)) { bi = c; bl = l; }
        }
        best_c = bi;
    }
    workgroupBarrier();
    let c = best_c;

    var bv = 0.0;
    var bidx = NO_INDEX;
    for (var v = t; v < V; v = v + WG) {
        let l = work_l[row + v];
        var z = neg_inf();
        if (l != BANNED) {
            if (params.mode == 1u) {
                z = experts[b * params.stride_expert + v];
            } else {
                z = l + shift(c, b, v);
            }
            // Strided scan: a later v only replaces on a strictly larger value (lowest index wins).
            if (bidx == NO_INDEX || z > bv) { bv = z; bidx = v; }
        }
        fused[row + v] = z;
    }
    red[t] = bv;
    red_i[t] = bidx;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (t < s) {
            let oi = red_i[t + s];
            let ov = red[t + s];
            let mi = red_i[t];
            if (oi != NO_INDEX && (mi == NO_INDEX || ov > red[t] || (ov == red[t] && oi < mi))) {
                red[t] = ov;
                red_i[t] = oi;
            }
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        let tok = red_i[0];
        choice[b] = vec4<u32>(c, select(tok, 0u, tok == NO_INDEX), select(0u, 1u, tok == NO_INDEX), 0u);
    }
}
