//! `api`: arbitrary descriptors, dimensions (raw `u32`, or near `usize::MAX`) and slice
//! lengths through every public entry point. Every call must return `Ok` or a typed `Err`:
//! a panic or an abort is a crash, and so is an allocation over libFuzzer's `-malloc_limit_mb`
//! (`scripts/fuzz.sh` sets it), since this target itself never allocates more than
//! `MAX_ELEMS` floats per slice. Beyond "no crash" it checks the contracts that cost nothing:
//! an error leaves the output untouched, success writes every output element, a plan whose
//! slices all have their implied lengths runs, and a second call gives the same bits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pointwise::{channel_shuffle, KernelId, Plan, PlanOptions, WeightOrder, Workspace};
use pointwise_fuzz::{kernel_choice, slice_len, ApiCase, MAX_MACS};

/// A signalling-NaN payload no arithmetic produces: marks output elements not yet written.
const SENTINEL: u32 = 0x7f80_1234;

/// `len` values from a small generator, in `[-2, 2]`.
fn data(len: usize, seed: u32) -> Vec<f32> {
    let mut s = u64::from(seed) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 22) as f32 - 2.0
        })
        .collect()
}

/// Whether a call of this many multiply-adds is under the work cap.
fn must_run_macs(macs: Option<usize>) -> bool {
    macs.is_some_and(|m| m <= MAX_MACS)
}

fuzz_target!(|case: ApiCase| {
    let conv = case.conv();
    let dims = case.dims();

    // Descriptor and shape arithmetic: any result is fine, only typed.
    let valid = conv.validate().is_ok();
    let weights_len = conv.weights_len().ok();
    let input_len = conv.input_len(dims).ok();
    let out_dims = conv.output_dims(dims);
    let output_len = out_dims.as_ref().ok().and_then(|o| o.len().ok());
    if let Ok(o) = &out_dims {
        // An empty shape has length 0 whatever its other factors (regression:
        // `empty_shapes_whose_other_factors_overflow` in tests/bad_inputs.rs).
        if o.is_empty() {
            assert_eq!(o.len(), Ok(0), "{o:?}");
        }
        if let Ok(len) = o.len() {
            assert_eq!(o.is_empty(), len == 0, "{o:?}");
        }
    }
    let _ = KernelId::from_name(&String::from_utf8_lossy(&case.name));

    // Plan: slices of the given lengths.
    let w = data(slice_len(weights_len, case.weights_len), case.seed);
    let bias = (case.bias_len != i16::MIN).then(|| data(slice_len(Some(conv.out_channels), case.bias_len), 7));
    let options = PlanOptions::default()
        .with_kernel(kernel_choice(case.kernel))
        .with_threads(case.threads());
    let slopes = case.slope_count(conv.out_channels).map(|n| data(n, 11));
    let order = if case.input_major {
        WeightOrder::InputMajor
    } else {
        WeightOrder::OutputMajor
    };
    let mut builder = Plan::builder(&conv, &w).weight_order(order).options(options);
    if let Some(b) = &bias {
        builder = builder.bias(b);
    }
    if let Some(s) = &slopes {
        builder = builder.prelu_slope(s);
    }
    let plan = builder.build();
    let slopes_ok = match (&slopes, conv.activation.needs_slope()) {
        (Some(s), true) => s.len() == conv.out_channels,
        (None, false) => true,
        _ => false,
    };
    if valid
        && slopes_ok
        && Some(w.len()) == weights_len
        && bias.as_ref().is_none_or(|b| b.len() == conv.out_channels)
    {
        if let Err(e) = &plan {
            assert!(
                matches!(e, pointwise::Error::KernelUnavailable(_)),
                "a valid plan failed: {e:?}"
            );
        }
    }
    let Ok(mut plan) = plan else { return };
    if let Some((tile, fold)) = case.tiling() {
        // Rejected for kernels without tiles and indices past the last tile.
        let tiles = pointwise::testing::tiles(plan.kernel());
        let name = tiles.get(tile).map_or("no_such_tile", |t| t.name);
        let _ = plan.force_tile(name, fold);
    }

    // Forward: slices of the given lengths, output pre-filled with the sentinel.
    let mut x = data(slice_len(input_len, case.input_len), case.seed.rotate_left(7));
    if let (Some(v), false) = (case.special_value(), x.is_empty()) {
        let at = case.special_at as usize % x.len();
        x[at] = v;
    }
    let residual = (case.residual_len != i16::MIN).then(|| data(slice_len(output_len, case.residual_len), 3));
    let mut y_len = slice_len(output_len, case.output_len);
    let exact = Some(x.len()) == input_len
        && Some(y_len) == output_len
        && residual.as_ref().is_none_or(|r| Some(r.len()) == output_len);
    // Work cap: a valid call over MAX_MACS only runs its error path (output one too long).
    let macs = output_len.map(|o| o.saturating_mul(conv.in_channels / conv.groups.max(1)));
    if case.in_place {
        // The output holds the residual: on error it must be left as it was.
        let mut len = slice_len(output_len, case.output_len);
        let lengths_ok = Some(x.len()) == input_len && Some(len) == output_len;
        if lengths_ok && !must_run_macs(macs) {
            len += 1;
        }
        let must = lengths_ok && must_run_macs(macs);
        let before = data(len, 3);
        let mut y = before.clone();
        match plan.forward_residual_in_place(&x, dims, &mut y, &mut Workspace::new()) {
            Err(e) => {
                assert!(!must, "a valid in-place call failed: {e:?}");
                assert!(
                    y.iter().zip(&before).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "output modified by a failed in-place call ({e:?})"
                );
            }
            Ok(()) => assert!(Some(y.len()) == output_len, "forward_residual_in_place accepted a wrong length"),
        }
        return;
    }
    let must_run = exact && must_run_macs(macs);
    if exact && !must_run {
        y_len += 1;
    }
    let mut ws = Workspace::new();
    let mut y = vec![f32::from_bits(SENTINEL); y_len];
    match plan.forward(&x, dims, residual.as_deref(), &mut y, &mut ws) {
        Err(e) => {
            assert!(!must_run, "a call with every slice of its implied length failed: {e:?}");
            assert!(
                y.iter().all(|v| v.to_bits() == SENTINEL),
                "output modified by a failed call ({e:?})"
            );
        }
        Ok(()) => {
            assert!(Some(y.len()) == output_len, "forward accepted a wrong output length");
            if let Some(i) = y.iter().position(|v| v.to_bits() == SENTINEL) {
                panic!("output element {i} of {} not written", y.len());
            }
            // Same workspace, same bits (cheap calls only).
            if macs.is_some_and(|m| m <= 1 << 16) {
                let mut again = vec![f32::from_bits(SENTINEL); y.len()];
                plan.forward(&x, dims, residual.as_deref(), &mut again, &mut ws)
                    .unwrap();
                let same = y
                    .iter()
                    .zip(&again)
                    .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
                assert!(same, "a second call gave other results");
            }
        }
    }

    // Channel shuffle of the input, with its own error paths.
    let mut shuffled = vec![f32::from_bits(SENTINEL); x.len()];
    let groups = case.shuffle_groups as usize;
    if channel_shuffle(&x, &mut shuffled, dims, conv.in_channels, groups, conv.layout).is_err() {
        assert!(shuffled.iter().all(|v| v.to_bits() == SENTINEL));
    }
});
