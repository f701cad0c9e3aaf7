//! Every tile of every SIMD kernel, called directly: all edge extents `m = 1..MR`,
//! `n = 1..NR`, short and long reductions, prime row strides, NaN guard regions around every
//! buffer and a NaN-filled output, compared with an f64 reference.
mod common;
use common::*;
use pointwise::testing::{run_tile, tiles};
use pointwise::{Activation, KernelId};

const GUARD: usize = 67;
/// A NaN with a payload that no arithmetic produces, to recognise untouched guard cells.
fn guard_value() -> f32 {
    f32::from_bits(0x7fc0_1234)
}

fn next_prime(mut v: usize) -> usize {
    loop {
        if v > 1 && (2..v).take_while(|d| d * d <= v).all(|d| !v.is_multiple_of(d)) {
            return v;
        }
        v += 1;
    }
}

/// A buffer with NaN guards on both sides; `body()` is the part the kernel may see.
struct Guarded {
    data: Vec<f32>,
    len: usize,
}

impl Guarded {
    fn new(body: &[f32]) -> Self {
        let mut data = vec![guard_value(); body.len() + 2 * GUARD];
        data[GUARD..GUARD + body.len()].copy_from_slice(body);
        Guarded { data, len: body.len() }
    }
    fn body(&self) -> &[f32] {
        &self.data[GUARD..GUARD + self.len]
    }
    fn body_mut(&mut self) -> &mut [f32] {
        &mut self.data[GUARD..GUARD + self.len]
    }
    fn guards_intact(&self) -> bool {
        let g = guard_value().to_bits();
        self.data[..GUARD]
            .iter()
            .chain(&self.data[GUARD + self.len..])
            .all(|v| v.to_bits() == g)
    }
}

/// Deterministic small integers in [-3, 3].
fn ints(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104_729) >> 3) % 7) as f32 - 3.0)
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn check_call(kernel: KernelId, tile: usize, mr: usize, nr: usize, kc: usize, m: usize, n: usize, act: Activation) {
    let ldc = next_prime(nr + 1);
    let ldr = next_prime(ldc + 2);
    let a = Guarded::new(&ints(kc * mr, 1 + kc + m));
    let b = Guarded::new(&ints(kc * nr, 2 + n));
    let per_row = (m + n + kc).is_multiple_of(2);
    let bias = Guarded::new(&ints(if per_row { mr } else { nr }, 3));
    let res = Guarded::new(&ints((mr - 1) * ldr + nr, 4));
    // Output region: MR rows at stride ldc, pre-filled with NaN.
    let mut c = Guarded::new(&vec![f32::NAN; (mr - 1) * ldc + nr]);
    let with_bias = kc % 3 != 1;
    let with_res = kc.is_multiple_of(2) || m == 1;
    run_tile(
        kernel,
        tile,
        kc,
        a.body(),
        b.body(),
        m,
        n,
        c.body_mut(),
        ldc,
        with_bias.then(|| bias.body()),
        per_row,
        with_res.then(|| (res.body(), ldr)),
        act,
    )
    .unwrap();
    let ctx = format!("{kernel} tile {tile} ({mr}x{nr}) kc {kc} m {m} n {n} {act:?}");
    assert!(
        a.guards_intact() && b.guards_intact() && c.guards_intact(),
        "{ctx}: guard overwritten"
    );
    for r in 0..mr {
        for l in 0..ldc.min(nr) {
            let got = c.body()[r * ldc + l];
            if r >= m || l >= n {
                assert!(got.is_nan(), "{ctx}: wrote outside the tile at ({r}, {l})");
                continue;
            }
            let mut z = 0.0f64;
            let mut mag = 0.0f64;
            for p in 0..kc {
                let prod = a.body()[p * mr + r] as f64 * b.body()[p * nr + l] as f64;
                z += prod;
                mag += prod.abs();
            }
            if with_bias {
                z += bias.body()[if per_row { r } else { l }] as f64;
            }
            if with_res {
                z += res.body()[r * ldr + l] as f64;
            }
            let want = act64(act, z, 0.0);
            if exact_activation(act) {
                assert_eq!(got as f64, want, "{ctx}: ({r}, {l})");
            } else {
                let bound = lipschitz(act, 0.0) * 2.0 * gamma(kc + 2) * mag + act_error(act, z, want) + 1e-37;
                assert!(
                    (got as f64 - want).abs() <= bound,
                    "{ctx}: ({r}, {l}) got {got} want {want}"
                );
            }
        }
    }
}

/// Every activation but PReLU, whose per-channel slopes the tile hook does not take (the
/// forced tilings of `tests/sweep.rs` run it through every tile).
const TILE_ACTIVATIONS: [Activation; ACTIVATIONS.len() - 1] = {
    let mut out = [Activation::Identity; ACTIVATIONS.len() - 1];
    let mut i = 0;
    let mut j = 0;
    while i < ACTIVATIONS.len() {
        if !matches!(ACTIVATIONS[i], Activation::Prelu) {
            out[j] = ACTIVATIONS[i];
            j += 1;
        }
        i += 1;
    }
    out
};

fn simd_kernels() -> Vec<KernelId> {
    kernels_under_test()
        .into_iter()
        .filter(|k| k.is_microkernel())
        .collect()
}

#[test]
fn every_edge_extent_and_short_reductions() {
    let kcs: &[usize] = if reduced() { &[1, 3] } else { &[1, 2, 3, 4, 5] };
    for kernel in simd_kernels() {
        let before = kernel.invocations();
        let tile_list = tiles(kernel);
        assert!(!tile_list.is_empty());
        for (t, info) in tile_list.iter().enumerate() {
            for m in 1..=info.mr {
                for n in 1..=info.nr {
                    for &kc in kcs {
                        let act = TILE_ACTIVATIONS[(m + n + kc) % TILE_ACTIVATIONS.len()];
                        check_call(kernel, t, info.mr, info.nr, kc, m, n, act);
                    }
                }
            }
        }
        assert!(kernel.invocations() > before, "{kernel} did not run");
    }
}

#[test]
fn long_reductions_and_every_activation() {
    let kcs: &[usize] = if reduced() {
        &[17, 256]
    } else {
        &[7, 17, 255, 256, 257, 1024, 2049]
    };
    for kernel in simd_kernels() {
        for (t, info) in tiles(kernel).iter().enumerate() {
            for &kc in kcs {
                for act in TILE_ACTIVATIONS {
                    for (m, n) in [
                        (info.mr, info.nr),
                        (1, 1),
                        (info.mr, 1),
                        (1, info.nr),
                        (info.mr - 1, info.nr - 1),
                    ] {
                        if m > 0 && n > 0 {
                            check_call(kernel, t, info.mr, info.nr, kc, m, n, act);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn hook_rejects_bad_extents() {
    for kernel in simd_kernels() {
        let info = tiles(kernel)[0];
        let a = vec![0.0; 4 * info.mr];
        let b = vec![0.0; 4 * info.nr];
        let mut c = vec![0.0; info.mr * info.nr];
        let act = Activation::Identity;
        assert!(run_tile(kernel, 99, 4, &a, &b, 1, 1, &mut c, info.nr, None, true, None, act).is_err());
        assert!(run_tile(
            kernel,
            0,
            4,
            &a,
            &b,
            info.mr + 1,
            1,
            &mut c,
            info.nr,
            None,
            true,
            None,
            act
        )
        .is_err());
        assert!(run_tile(kernel, 0, 5, &a, &b, 1, 1, &mut c, info.nr, None, true, None, act).is_err());
        assert!(run_tile(
            kernel,
            0,
            4,
            &a,
            &b,
            info.mr,
            info.nr,
            &mut c[1..],
            info.nr,
            None,
            true,
            None,
            act
        )
        .is_err());
    }
}

/// `rows` steps of `lanes` values (step-major), packed as bf16 pairs: `ceil(rows / 2)` rows
/// of `lanes` 32-bit values, step `2q` in the low half and `2q + 1` (zero past the end) in
/// the high half. Every value must be a bf16 value (small integers are).
fn pairs(values: &[f32], rows: usize, lanes: usize) -> Vec<f32> {
    let bits = |c: usize, l: usize| {
        if c < rows {
            values[c * lanes + l].to_bits() >> 16
        } else {
            0
        }
    };
    let mut out = Vec::with_capacity(rows.div_ceil(2) * lanes);
    for q in 0..rows.div_ceil(2) {
        for l in 0..lanes {
            out.push(f32::from_bits(bits(2 * q + 1, l) << 16 | bits(2 * q, l)));
        }
    }
    out
}

/// Every bf16-pair tile (numbered after the kernel's f32 tiles), called directly on panels of
/// small integers: every edge extent, odd and even reductions, bit for bit against the f64
/// sum, nothing written outside the extent.
#[test]
fn every_bf16_pair_tile_on_every_edge_extent() {
    let kcs: &[usize] = if reduced() {
        &[1, 4, 33]
    } else {
        &[1, 2, 3, 4, 5, 17, 256, 257]
    };
    for kernel in pointwise::available_kernels() {
        let pair_tiles = pointwise::testing::bf16_pair_tiles(kernel);
        if pair_tiles.is_empty() {
            continue;
        }
        let before = kernel.invocations();
        let first = tiles(kernel).len();
        for (i, info) in pair_tiles.iter().enumerate() {
            let (mr, nr) = (info.mr, info.nr);
            for &kc in kcs {
                let (a, b) = (ints(kc * mr, kc), ints(kc * nr, kc + 1));
                let (ap, bp) = (Guarded::new(&pairs(&a, kc, mr)), Guarded::new(&pairs(&b, kc, nr)));
                for (m, n) in (1..=mr).flat_map(|m| [(m, 1), (m, nr / 2 + 1), (m, nr - 1), (m, nr)]) {
                    let ldc = next_prime(nr + 1);
                    let mut c = Guarded::new(&vec![f32::NAN; (mr - 1) * ldc + nr]);
                    let act = if (m + kc).is_multiple_of(2) {
                        Activation::Relu
                    } else {
                        Activation::Identity
                    };
                    run_tile(
                        kernel,
                        first + i,
                        kc,
                        ap.body(),
                        bp.body(),
                        m,
                        n,
                        c.body_mut(),
                        ldc,
                        None,
                        true,
                        None,
                        act,
                    )
                    .unwrap();
                    let ctx = format!("{} kc {kc} m {m} n {n}", info.name);
                    assert!(
                        ap.guards_intact() && bp.guards_intact() && c.guards_intact(),
                        "{ctx}: guard"
                    );
                    for r in 0..mr {
                        for l in 0..nr {
                            let got = c.body()[r * ldc + l];
                            if r >= m || l >= n {
                                assert!(got.is_nan(), "{ctx}: wrote outside the tile at ({r}, {l})");
                                continue;
                            }
                            let z: f64 = (0..kc).map(|p| a[p * mr + r] as f64 * b[p * nr + l] as f64).sum();
                            assert_eq!(got as f64, act64(act, z, 0.0), "{ctx}: ({r}, {l})");
                        }
                    }
                }
            }
        }
        assert!(kernel.invocations() > before, "{kernel} did not run");
    }
}
