//! The bad-input catalogue: every invalid input the public API can receive, one entry each,
//! with the exact [`Error`] it must return. Every entry that has an output buffer checks that
//! the buffer is untouched, and every `forward` entry runs on each kernel under test and checks
//! that no kernel ran.
//!
//! The test hooks of the `testing` feature (`Plan::force_tile`, `pointwise::testing::run_tile`) are in the
//! catalogue too: they are public, so they get the same treatment.
//!
//! Below the catalogue: the valid edge inputs next to it (empty inputs are a no-op, kernel
//! names parse case-insensitively, every available kernel can be forced) and the messages.
mod common;
use common::kernels_under_test;
use pointwise::testing;
use pointwise::{
    available_kernels, channel_shuffle, Accumulate, Activation, BackwardPlan, Conv1x1, Error, Gradients, InputDims,
    KernelChoice, KernelId, Layout, OutputDims, Padding, Plan, PlanOptions, Saved, WeightOrder, Workspace,
};

/// What the output buffer holds before a call that must fail.
const SENTINEL: f32 = -7.25;

/// One call into the API, with the lengths of the slices it passes.
#[derive(Debug, Clone)]
enum Call {
    /// `Conv1x1::validate`.
    Validate(Conv1x1),
    /// `Plan::new` with weights and bias of these lengths (`conv.validate()`, when it fails,
    /// must fail with the same error).
    Plan {
        conv: Conv1x1,
        weights: usize,
        bias: Option<usize>,
        kernel: KernelChoice,
    },
    /// `Plan::builder` with weights in `order`, and PReLU slopes of `slope.0` values equal to
    /// `slope.1`, then `build`.
    Build {
        conv: Conv1x1,
        weights: usize,
        order: WeightOrder,
        slope: Option<(usize, f32)>,
    },
    /// `Plan::forward_residual_in_place` on a valid plan of `conv` forced onto each kernel
    /// under test.
    ForwardInPlace {
        conv: Conv1x1,
        dims: InputDims,
        input: usize,
        output: usize,
    },
    /// `Plan::forward` on a valid plan of `conv` forced onto each kernel under test.
    Forward {
        conv: Conv1x1,
        dims: InputDims,
        input: usize,
        residual: Option<usize>,
        output: usize,
    },
    /// `Conv1x1::output_dims` (and `output_hw`, which it calls).
    OutputDims(Conv1x1, InputDims),
    /// `Conv1x1::input_len`.
    InputLen(Conv1x1, InputDims),
    /// `Conv1x1::weights_len`.
    WeightsLen(Conv1x1),
    /// `OutputDims::len`.
    OutputLen(OutputDims),
    /// `KernelId::from_name`.
    KernelName(&'static str),
    /// `KernelChoice::resolve`.
    Resolve(KernelChoice),
    /// `Plan::force_tile` (test hook) on a valid plan forced onto `kernel`.
    ForceTiling { kernel: KernelId, tile: &'static str },
    /// `pointwise::testing::run_tile` (test hook) with slices of these lengths.
    RunTile(TileArgs),
    /// `BackwardPlan::new` with weights of this length, then `with_prelu_slope` with
    /// `slope.0` values equal to `slope.1`.
    BackwardNew {
        conv: Conv1x1,
        weights: usize,
        slope: Option<(usize, f32)>,
    },
    /// A pass of a valid `BackwardPlan` of `conv` (PReLU with valid slopes unless
    /// `no_slopes`) with slices of these lengths; every gradient buffer must stay untouched.
    Backward {
        conv: Conv1x1,
        dims: InputDims,
        pass: BackwardPass,
        lens: BackwardLens,
        saved_output: bool,
        no_slopes: bool,
    },
    /// `channel_shuffle` with slices of these lengths.
    Shuffle {
        dims: InputDims,
        channels: usize,
        groups: usize,
        layout: Layout,
        input: usize,
        output: usize,
    },
}

/// Which `BackwardPlan` method a [`Call::Backward`] calls.
#[derive(Debug, Clone, Copy)]
enum BackwardPass {
    Data,
    Weights,
    Bias,
    Activation,
    Step,
}

/// Slice lengths of a backward call: each pass reads the ones it takes (`dr`: the
/// activation pass's `dz`, the step's residual gradient).
#[derive(Debug, Clone, Copy)]
struct BackwardLens {
    x: usize,
    dy: usize,
    saved: usize,
    dx: usize,
    dw: usize,
    db: usize,
    dr: usize,
}

struct Entry {
    name: String,
    call: Call,
    expected: Error,
}

/// Arguments of `testing::run_tile`, as slice lengths.
#[derive(Debug, Clone, Copy)]
struct TileArgs {
    kernel: KernelId,
    tile: usize,
    kc: usize,
    a: usize,
    b: usize,
    m: usize,
    n: usize,
    c: usize,
    ldc: usize,
    bias: Option<usize>,
    /// `(length, row stride)`.
    residual: Option<(usize, usize)>,
}

fn entry(name: impl Into<String>, call: Call, expected: Error) -> Entry {
    Entry {
        name: name.into(),
        call,
        expected,
    }
}

fn mismatch(what: &'static str, expected: usize, got: usize) -> Error {
    Error::LengthMismatch { what, expected, got }
}

fn overflow(what: &'static str) -> Error {
    Error::SizeOverflow { what }
}

fn plan(conv: Conv1x1, weights: usize, bias: Option<usize>) -> Call {
    Call::Plan {
        conv,
        weights,
        bias,
        kernel: KernelChoice::Auto,
    }
}

/// A valid 4 -> 6 convolution: weights 24, bias 6.
fn base() -> Conv1x1 {
    Conv1x1::new(4, 6)
}

/// The forward cases: a plain strided, padded NCHW convolution and a grouped NHWC one.
struct ForwardCase {
    label: &'static str,
    conv: Conv1x1,
    dims: InputDims,
    input: usize,
    output: usize,
    /// The length of a residual shaped like the output without the stride (`[N, K, H, W]`).
    unstrided_output: usize,
}

fn forward_cases() -> [ForwardCase; 2] {
    [
        // 5x5, pad 1, stride (2, 1): Ho = (5 + 2 - 1) / 2 + 1 = 4, Wo = 7.
        ForwardCase {
            label: "nchw",
            conv: base().with_stride(2, 1).with_padding(Padding::uniform(1)),
            dims: InputDims::new(2, 5, 5),
            input: 2 * 4 * 25,
            output: 2 * 6 * 4 * 7,
            unstrided_output: 2 * 6 * 7 * 7,
        },
        // 3 groups, 6 -> 9, stride (3, 2), SAME: Ho = ceil(4 / 3) = 2, Wo = ceil(7 / 2) = 4.
        ForwardCase {
            label: "nhwc grouped",
            conv: Conv1x1::new(6, 9)
                .with_groups(3)
                .with_layout(Layout::Nhwc)
                .with_stride(3, 2)
                .with_padding(Padding::SameUpper)
                .with_activation(Activation::Relu6),
            dims: InputDims::new(1, 4, 7),
            input: 6 * 28,
            output: 9 * 2 * 4,
            unstrided_output: 9 * 28,
        },
    ]
}

fn catalogue() -> Vec<Entry> {
    let mut c = Vec::new();

    // --- Descriptor: zero sizes, groups, strides. ---
    let zero = |what| Error::ZeroSize { what };
    c.push(entry(
        "in_channels 0",
        plan(Conv1x1::new(0, 6), 0, None),
        zero("in_channels"),
    ));
    c.push(entry(
        "out_channels 0",
        plan(Conv1x1::new(4, 0), 0, None),
        zero("out_channels"),
    ));
    c.push(entry("groups 0", plan(base().with_groups(0), 24, None), zero("groups")));
    let not_divide = |groups, what, channels| Error::GroupsDoNotDivide { groups, what, channels };
    c.push(entry(
        "groups 3 do not divide in_channels 4",
        plan(base().with_groups(3), 8, None),
        not_divide(3, "in_channels", 4),
    ));
    c.push(entry(
        "groups 4 do not divide out_channels 6",
        plan(base().with_groups(4), 6, None),
        not_divide(4, "out_channels", 6),
    ));
    c.push(entry(
        "groups 8 exceed in_channels 4",
        plan(Conv1x1::new(4, 8).with_groups(8), 4, None),
        not_divide(8, "in_channels", 4),
    ));
    c.push(entry(
        "groups 3 divide in_channels 3 but not out_channels 4",
        plan(Conv1x1::new(3, 4).with_groups(3), 4, None),
        not_divide(3, "out_channels", 4),
    ));
    for (sh, sw) in [(0, 1), (1, 0), (0, 0)] {
        c.push(entry(
            format!("stride ({sh}, {sw})"),
            plan(base().with_stride(sh, sw), 24, None),
            Error::ZeroStride(sh, sw),
        ));
    }

    // --- Descriptor: activation parameters. ---
    let nan_bound = Error::InvalidActivation("Clamp bound is NaN");
    let min_gt_max = Error::InvalidActivation("Clamp has min > max");
    let bad_slope = Error::InvalidActivation("LeakyRelu slope is not finite");
    for (name, act, err) in [
        (
            "Clamp min NaN",
            Activation::Clamp {
                min: f32::NAN,
                max: 1.0,
            },
            &nan_bound,
        ),
        (
            "Clamp max NaN",
            Activation::Clamp {
                min: 0.0,
                max: f32::NAN,
            },
            &nan_bound,
        ),
        (
            "Clamp both NaN",
            Activation::Clamp {
                min: f32::NAN,
                max: f32::NAN,
            },
            &nan_bound,
        ),
        ("Clamp min > max", Activation::Clamp { min: 2.0, max: 1.0 }, &min_gt_max),
        (
            "Clamp +inf > -inf",
            Activation::Clamp {
                min: f32::INFINITY,
                max: f32::NEG_INFINITY,
            },
            &min_gt_max,
        ),
        (
            "Clamp smallest positive > 0",
            Activation::Clamp {
                min: f32::from_bits(1),
                max: 0.0,
            },
            &min_gt_max,
        ),
        (
            "LeakyRelu slope +inf",
            Activation::LeakyRelu { alpha: f32::INFINITY },
            &bad_slope,
        ),
        (
            "LeakyRelu slope -inf",
            Activation::LeakyRelu {
                alpha: f32::NEG_INFINITY,
            },
            &bad_slope,
        ),
        (
            "LeakyRelu slope NaN",
            Activation::LeakyRelu { alpha: f32::NAN },
            &bad_slope,
        ),
    ] {
        c.push(entry(name, plan(base().with_activation(act), 24, None), err.clone()));
        c.push(entry(
            format!("validate: {name}"),
            Call::Validate(base().with_activation(act)),
            err.clone(),
        ));
    }

    let bad_hard_sigmoid = Error::InvalidActivation("HardSigmoid alpha or beta is not finite");
    for (name, act) in [
        (
            "HardSigmoid alpha inf",
            Activation::HardSigmoid {
                alpha: f32::INFINITY,
                beta: 0.5,
            },
        ),
        (
            "HardSigmoid alpha NaN",
            Activation::HardSigmoid {
                alpha: f32::NAN,
                beta: 0.5,
            },
        ),
        (
            "HardSigmoid beta -inf",
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: f32::NEG_INFINITY,
            },
        ),
        (
            "HardSigmoid beta NaN",
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: f32::NAN,
            },
        ),
    ] {
        c.push(entry(
            name,
            plan(base().with_activation(act), 24, None),
            bad_hard_sigmoid.clone(),
        ));
        c.push(entry(
            format!("validate: {name}"),
            Call::Validate(base().with_activation(act)),
            bad_hard_sigmoid.clone(),
        ));
    }

    // --- The builder: weight order, PReLU slopes. ---
    let build = |act: Activation, weights, order, slope| Call::Build {
        conv: base().with_activation(act),
        weights,
        order,
        slope,
    };
    let prelu = Activation::Prelu;
    let bad_prelu = Error::InvalidActivation("PReLU slope is not finite");
    for (name, call, err) in [
        (
            "PReLU without slopes",
            build(prelu, 24, WeightOrder::OutputMajor, None),
            mismatch("prelu slope", 6, 0),
        ),
        (
            "PReLU slopes short",
            build(prelu, 24, WeightOrder::OutputMajor, Some((5, 0.25))),
            mismatch("prelu slope", 6, 5),
        ),
        (
            "PReLU slopes long",
            build(prelu, 24, WeightOrder::OutputMajor, Some((7, 0.25))),
            mismatch("prelu slope", 6, 7),
        ),
        (
            "PReLU slope NaN",
            build(prelu, 24, WeightOrder::OutputMajor, Some((6, f32::NAN))),
            bad_prelu.clone(),
        ),
        (
            "PReLU slope inf",
            build(prelu, 24, WeightOrder::OutputMajor, Some((6, f32::INFINITY))),
            bad_prelu.clone(),
        ),
        (
            "PReLU slopes given to ReLU",
            build(Activation::Relu, 24, WeightOrder::OutputMajor, Some((6, 0.25))),
            Error::InvalidActivation("PReLU slopes given to another activation"),
        ),
        (
            "input-major weights short",
            build(Activation::Relu, 23, WeightOrder::InputMajor, None),
            mismatch("weights", 24, 23),
        ),
        (
            "input-major weights long",
            build(prelu, 25, WeightOrder::InputMajor, Some((6, 0.5))),
            mismatch("weights", 24, 25),
        ),
    ] {
        c.push(entry(format!("builder: {name}"), call, err));
    }

    // --- Descriptor: sizes whose buffers cannot exist. ---
    c.push(entry(
        "weights count overflows usize",
        plan(Conv1x1::new(usize::MAX, usize::MAX), 0, None),
        overflow("weights length"),
    ));
    c.push(entry(
        "weights count over isize::MAX bytes",
        plan(Conv1x1::new(1 << 31, 1 << 31), 0, None),
        overflow("weights length"),
    ));
    c.push(entry(
        "grouped weights count over isize::MAX bytes",
        plan(Conv1x1::new(1 << 40, 1 << 40).with_groups(1 << 18), 0, None),
        overflow("weights length"),
    ));
    c.push(entry(
        "validate: weights count overflows usize",
        Call::Validate(Conv1x1::new(usize::MAX, 3)),
        overflow("weights length"),
    ));
    c.push(entry(
        "weights_len with groups 0",
        Call::WeightsLen(base().with_groups(0)),
        zero("groups"),
    ));
    c.push(entry(
        "weights_len overflows",
        Call::WeightsLen(Conv1x1::new(usize::MAX, 2)),
        overflow("weights length"),
    ));

    // --- Plan: weight and bias slices. ---
    for (name, len) in [("short", 23), ("long", 25), ("empty", 0)] {
        c.push(entry(
            format!("weights {name}"),
            plan(base(), len, None),
            mismatch("weights", 24, len),
        ));
    }
    c.push(entry(
        "grouped weights given as [K, C]",
        plan(base().with_groups(2), 24, None),
        mismatch("weights", 12, 24),
    ));
    c.push(entry(
        "depthwise weights given as [K, C]",
        plan(Conv1x1::new(8, 8).with_groups(8), 64, None),
        mismatch("weights", 8, 64),
    ));
    for (name, len) in [("short", 5), ("long", 7), ("empty", 0), ("of in_channels", 4)] {
        c.push(entry(
            format!("bias {name}"),
            plan(base(), 24, Some(len)),
            mismatch("bias", 6, len),
        ));
    }

    // --- Plan: kernels. ---
    for k in KernelId::ALL.into_iter().filter(|k| !k.is_available()) {
        c.push(entry(
            format!("forced unavailable kernel {k}"),
            Call::Plan {
                conv: base(),
                weights: 24,
                bias: None,
                kernel: KernelChoice::Force(k),
            },
            Error::KernelUnavailable(k),
        ));
        c.push(entry(
            format!("resolve unavailable kernel {k}"),
            Call::Resolve(KernelChoice::Force(k)),
            Error::KernelUnavailable(k),
        ));
    }
    for name in ["sse9", "", "  ", "avx-512", "auto", "neon2", "ref"] {
        c.push(entry(
            format!("kernel name {name:?}"),
            Call::KernelName(name),
            Error::UnknownKernel(name.to_string()),
        ));
    }

    // --- Forward: every slice too short, too long, empty; residual of another shape. ---
    for fc in forward_cases() {
        let fwd = |input, residual, output| Call::Forward {
            conv: fc.conv,
            dims: fc.dims,
            input,
            residual,
            output,
        };
        let (x, y, l) = (fc.input, fc.output, fc.label);
        for (name, len) in [("short", x - 1), ("long", x + 1), ("empty", 0)] {
            c.push(entry(
                format!("{l}: input {name}"),
                fwd(len, None, y),
                mismatch("input", x, len),
            ));
        }
        c.push(entry(
            format!("{l}: input of the output's shape"),
            fwd(y, None, y),
            mismatch("input", x, y),
        ));
        for (name, len) in [("short", y - 1), ("long", y + 1), ("empty", 0)] {
            c.push(entry(
                format!("{l}: output {name}"),
                fwd(x, None, len),
                mismatch("output", y, len),
            ));
            c.push(entry(
                format!("{l}: residual {name}"),
                fwd(x, Some(len), y),
                mismatch("residual", y, len),
            ));
        }
        c.push(entry(
            format!("{l}: output of the input's shape"),
            fwd(x, None, x),
            mismatch("output", y, x),
        ));
        c.push(entry(
            format!("{l}: residual of the input's shape"),
            fwd(x, Some(x), y),
            mismatch("residual", y, x),
        ));
        c.push(entry(
            format!("{l}: residual shaped as if the stride were 1"),
            fwd(x, Some(fc.unstrided_output), y),
            mismatch("residual", y, fc.unstrided_output),
        ));
        // The in-place residual: the output is the residual, so only its length can be off.
        for (name, len) in [("short", y - 1), ("long", y + 1), ("empty", 0)] {
            c.push(entry(
                format!("{l}: in-place residual output {name}"),
                Call::ForwardInPlace {
                    conv: fc.conv,
                    dims: fc.dims,
                    input: x,
                    output: len,
                },
                mismatch("output", y, len),
            ));
        }
        c.push(entry(
            format!("{l}: in-place residual, input short"),
            Call::ForwardInPlace {
                conv: fc.conv,
                dims: fc.dims,
                input: x - 1,
                output: y,
            },
            mismatch("input", x, x - 1),
        ));
    }
    let fwd = |conv: Conv1x1, dims, input, output| Call::Forward {
        conv,
        dims,
        input,
        residual: None,
        output,
    };
    // Empty inputs are valid, but their slices are still checked.
    c.push(entry(
        "empty batch, output of one element",
        fwd(base(), InputDims::new(0, 5, 5), 0, 1),
        mismatch("output", 0, 1),
    ));
    c.push(entry(
        "zero height, input of three elements",
        fwd(base(), InputDims::new(2, 0, 5), 3, 0),
        mismatch("input", 0, 3),
    ));
    c.push(entry(
        "zero width with padding, residual of one element",
        Call::Forward {
            conv: base().with_padding(Padding::uniform(2)),
            dims: InputDims::new(1, 3, 0),
            input: 0,
            residual: Some(1),
            output: 0,
        },
        mismatch("residual", 0, 1),
    ));

    // --- Forward: sizes whose buffers cannot exist. ---
    c.push(entry(
        "input count overflows usize",
        fwd(base(), InputDims::new(usize::MAX, usize::MAX, 2), 0, 0),
        overflow("input length"),
    ));
    c.push(entry(
        "input height times channels overflows",
        fwd(base(), InputDims::new(1, usize::MAX, 1), 0, 0),
        overflow("input length"),
    ));
    c.push(entry(
        "input count over isize::MAX bytes",
        fwd(base(), InputDims::new(1 << 40, 1 << 20, 1), 0, 0),
        overflow("input length"),
    ));
    let pad = |top, bottom, left, right| Padding::Explicit {
        top,
        bottom,
        left,
        right,
    };
    c.push(entry(
        "padded height overflows",
        fwd(
            base().with_padding(pad(usize::MAX, 0, 0, 0)),
            InputDims::new(1, 1, 1),
            4,
            0,
        ),
        overflow("padded input extent"),
    ));
    c.push(entry(
        "padded width overflows",
        fwd(
            base().with_padding(pad(0, 0, 1, usize::MAX)),
            InputDims::new(1, 1, 1),
            4,
            0,
        ),
        overflow("padded input extent"),
    ));
    c.push(entry(
        "padded output count overflows usize",
        fwd(
            base().with_padding(pad(1 << 40, 0, 1 << 40, 0)),
            InputDims::new(1, 1, 1),
            4,
            0,
        ),
        overflow("output length"),
    ));
    c.push(entry(
        "padded output count over isize::MAX bytes",
        fwd(
            base().with_padding(pad(1 << 30, 0, 0, 1 << 30)),
            InputDims::new(1, 1, 1),
            4,
            0,
        ),
        overflow("output length"),
    ));

    // --- Shape arithmetic called directly. ---
    c.push(entry(
        "output_dims with stride (0, 2)",
        Call::OutputDims(base().with_stride(0, 2), InputDims::new(1, 3, 3)),
        Error::ZeroStride(0, 2),
    ));
    c.push(entry(
        "output_dims with padded extent overflow",
        Call::OutputDims(base().with_padding(pad(1, usize::MAX, 0, 0)), InputDims::new(1, 1, 1)),
        overflow("padded input extent"),
    ));
    c.push(entry(
        "input_len overflows",
        Call::InputLen(base(), InputDims::new(usize::MAX, 2, 1)),
        overflow("input length"),
    ));
    c.push(entry(
        "OutputDims::len overflows",
        Call::OutputLen(OutputDims {
            n: 1 << 32,
            k: 1 << 32,
            h: 1,
            w: 1,
        }),
        overflow("output length"),
    ));
    c.push(entry(
        "OutputDims::len over isize::MAX bytes",
        Call::OutputLen(OutputDims {
            n: 1,
            k: 1 << 31,
            h: 1 << 30,
            w: 1,
        }),
        overflow("output length"),
    ));

    // --- Test hooks: forced tilings and single microkernel calls. ---
    for k in kernels_under_test() {
        // A name no kernel has, and (for tiled kernels) another kernel's tile that this one
        // lacks (a bf16 kernel shares its base tier's f32 tiles).
        let mut names = vec!["avx512_f32_9x9_wrows"];
        let own: Vec<_> = testing::tiles(k)
            .into_iter()
            .chain(testing::bf16_pair_tiles(k))
            .collect();
        let other = KernelId::ALL
            .into_iter()
            .filter(|&o| o != k)
            .flat_map(testing::tiles)
            .find(|t| !own.contains(t));
        names.extend(other.map(|t| t.name));
        for name in names {
            c.push(entry(
                format!("force_tile: {name} on {k}"),
                Call::ForceTiling { kernel: k, tile: name },
                Error::InvalidTile(format!("{k} has no tile {name}")),
            ));
        }
    }
    // The portable kernel runs everywhere; a full tile with kc = 4 needs a 4 x MR panel,
    // a 4 x NR panel and an MR x NR output.
    let shape = testing::tiles(KernelId::Portable)[0];
    let (mr, nr) = (shape.mr, shape.nr);
    let tile = TileArgs {
        kernel: KernelId::Portable,
        tile: 0,
        kc: 4,
        a: 4 * mr,
        b: 4 * nr,
        m: mr,
        n: nr,
        c: mr * nr,
        ldc: nr,
        bias: Some(mr),
        residual: Some((mr * nr, nr)),
    };
    let outside = Error::InvalidTile("m or n outside the tile".into());
    for k in KernelId::ALL.into_iter().filter(|k| !k.is_available()) {
        c.push(entry(
            format!("run_tile: unavailable kernel {k}"),
            Call::RunTile(TileArgs { kernel: k, ..tile }),
            Error::KernelUnavailable(k),
        ));
    }
    let tiles = testing::tiles(KernelId::Portable).len();
    let hook_cases = [
        (
            "no such tile",
            TileArgs { tile: tiles, ..tile },
            Error::InvalidTile("no such tile".into()),
        ),
        ("m = 0", TileArgs { m: 0, ..tile }, outside.clone()),
        ("n = 0", TileArgs { n: 0, ..tile }, outside.clone()),
        ("m = MR + 1", TileArgs { m: mr + 1, ..tile }, outside.clone()),
        ("n = NR + 1", TileArgs { n: nr + 1, ..tile }, outside),
        (
            "a short",
            TileArgs { a: 4 * mr - 1, ..tile },
            mismatch("a", 4 * mr, 4 * mr - 1),
        ),
        (
            "b short",
            TileArgs { b: 4 * nr - 1, ..tile },
            mismatch("b", 4 * nr, 4 * nr - 1),
        ),
        ("kc * MR overflows", TileArgs { kc: usize::MAX, ..tile }, overflow("a")),
        (
            "output short",
            TileArgs { c: mr * nr - 1, ..tile },
            mismatch("output", mr * nr, mr * nr - 1),
        ),
        (
            "edge-tile output short",
            TileArgs {
                m: 1,
                n: 1,
                c: 0,
                bias: Some(1),
                residual: Some((1, nr)),
                ..tile
            },
            mismatch("output", 1, 0),
        ),
        (
            "bias short",
            TileArgs {
                bias: Some(mr - 1),
                ..tile
            },
            mismatch("bias", mr, mr - 1),
        ),
        (
            "residual short",
            TileArgs {
                residual: Some((mr * nr - 1, nr)),
                ..tile
            },
            mismatch("residual", mr * nr, mr * nr - 1),
        ),
    ];
    for (name, args, err) in hook_cases {
        c.push(entry(format!("run_tile: {name}"), Call::RunTile(args), err));
    }

    // --- channel_shuffle. ---
    let shuffle = |channels, groups, input, output| Call::Shuffle {
        dims: InputDims::new(1, 2, 1),
        channels,
        groups,
        layout: Layout::Nchw,
        input,
        output,
    };
    let invalid = |groups, channels| Error::InvalidShuffle { groups, channels };
    c.push(entry("shuffle groups 0", shuffle(6, 0, 12, 12), invalid(0, 6)));
    c.push(entry(
        "shuffle groups 4 of 6 channels",
        shuffle(6, 4, 12, 12),
        invalid(4, 6),
    ));
    c.push(entry(
        "shuffle groups 12 of 6 channels",
        shuffle(6, 12, 12, 12),
        invalid(12, 6),
    ));
    c.push(entry("shuffle channels 0", shuffle(0, 1, 0, 0), invalid(1, 0)));
    for (name, len) in [("short", 11), ("long", 13), ("empty", 0)] {
        c.push(entry(
            format!("shuffle input {name}"),
            shuffle(6, 2, len, 12),
            mismatch("input", 12, len),
        ));
        c.push(entry(
            format!("shuffle output {name}"),
            shuffle(6, 2, 12, len),
            mismatch("output", 12, len),
        ));
    }
    c.push(entry(
        "shuffle count overflows",
        Call::Shuffle {
            dims: InputDims::new(usize::MAX, 2, 2),
            channels: 6,
            groups: 2,
            layout: Layout::Nhwc,
            input: 0,
            output: 0,
        },
        overflow("shuffle length"),
    ));
    c.extend(backward_entries());
    c
}

/// The backward passes' entries: `BackwardPlan::new`, `with_prelu_slope`, and every slice of
/// every pass too short or too long, on a strided, padded, grouped convolution.
fn backward_entries() -> Vec<Entry> {
    let mut c = Vec::new();
    let conv = Conv1x1::new(4, 6)
        .with_groups(2)
        .with_stride(2, 2)
        .with_padding(Padding::uniform(1));
    let dims = InputDims::new(2, 5, 5);
    // 5 x 5 at stride 2 with padding 1: (5 + 2 - 1) / 2 + 1 = 4 x 4 outputs.
    let (nx, nz, nw) = (2 * 4 * 5 * 5, 2 * 6 * 4 * 4, 6 * 2);
    let good = BackwardLens {
        x: nx,
        dy: nz,
        saved: nz,
        dx: nx,
        dw: nw,
        db: 6,
        dr: nz,
    };
    let new = |conv, weights, slope| Call::BackwardNew { conv, weights, slope };
    c.push(entry(
        "backward weights short",
        new(conv, nw - 1, None),
        mismatch("weights", nw, nw - 1),
    ));
    c.push(entry(
        "backward groups do not divide",
        new(conv.with_groups(4), nw, None),
        Error::GroupsDoNotDivide {
            groups: 4,
            what: "out_channels",
            channels: 6,
        },
    ));
    let prelu = conv.with_activation(Activation::Prelu);
    c.push(entry(
        "backward slopes short",
        new(prelu, nw, Some((5, 0.5))),
        mismatch("prelu slope", 6, 5),
    ));
    c.push(entry(
        "backward slope not finite",
        new(prelu, nw, Some((6, f32::NAN))),
        Error::InvalidActivation("PReLU slope is not finite"),
    ));
    c.push(entry(
        "backward slopes for relu",
        new(conv.with_activation(Activation::Relu), nw, Some((6, 0.5))),
        Error::InvalidActivation("PReLU slopes given to another activation"),
    ));
    let call = |conv, pass, lens, saved_output, no_slopes| Call::Backward {
        conv,
        dims,
        pass,
        lens,
        saved_output,
        no_slopes,
    };
    type Field = fn(&mut BackwardLens) -> &mut usize;
    let fields: [(&str, &str, Field); 7] = [
        ("x", "input", |l| &mut l.x),
        ("dy", "grad_output", |l| &mut l.dy),
        ("saved", "saved", |l| &mut l.saved),
        ("dx", "grad_input", |l| &mut l.dx),
        ("dw", "grad_weights", |l| &mut l.dw),
        ("db", "grad_bias", |l| &mut l.db),
        ("dr", "grad_residual", |l| &mut l.dr),
    ];
    // The slices each pass takes; the activation pass calls its dz `grad_pre_activation`.
    let passes: [(BackwardPass, &[&str]); 5] = [
        (BackwardPass::Data, &["dy", "dx"]),
        (BackwardPass::Weights, &["x", "dy", "dw"]),
        (BackwardPass::Bias, &["dy", "db"]),
        (BackwardPass::Activation, &["dy", "saved", "dr"]),
        (BackwardPass::Step, &["x", "dy", "saved", "dx", "dw", "db", "dr"]),
    ];
    for (pass, takes) in passes {
        for &(field, what, get) in &fields {
            if !takes.contains(&field) {
                continue;
            }
            let what = match (pass, field) {
                (BackwardPass::Activation, "dr") => "grad_pre_activation",
                (BackwardPass::Data, "dy") | (BackwardPass::Weights, "dy") | (BackwardPass::Bias, "dy") => {
                    "grad_output"
                }
                _ => what,
            };
            for (how, delta) in [("short", -1isize), ("long", 1)] {
                let mut lens = good;
                let expected = *get(&mut lens);
                let got = expected.checked_add_signed(delta).unwrap();
                *get(&mut lens) = got;
                c.push(entry(
                    format!("backward {pass:?} {field} {how}"),
                    call(conv.with_activation(Activation::Silu), pass, lens, false, false),
                    mismatch(what, expected, got),
                ));
            }
        }
    }
    let needs_z =
        Error::InvalidActivation("this activation's derivative needs the pre-activation z (Saved::PreActivation)");
    let no_slopes = Error::InvalidActivation("PReLU backward needs the slopes (with_prelu_slope)");
    for pass in [BackwardPass::Activation, BackwardPass::Step] {
        c.push(entry(
            format!("backward {pass:?} SiLU from its output"),
            call(conv.with_activation(Activation::Silu), pass, good, true, false),
            needs_z.clone(),
        ));
        c.push(entry(
            format!("backward {pass:?} PReLU with a negative slope from its output"),
            call(prelu, pass, good, true, false),
            needs_z.clone(),
        ));
        c.push(entry(
            format!("backward {pass:?} PReLU without slopes"),
            call(prelu, pass, good, false, true),
            no_slopes.clone(),
        ));
    }
    c.push(entry(
        "backward data input length overflows",
        Call::Backward {
            conv,
            dims: InputDims::new(usize::MAX, 5, 5),
            pass: BackwardPass::Data,
            lens: good,
            saved_output: false,
            no_slopes: false,
        },
        overflow("input length"),
    ));
    c
}

/// `Ok` when every value still holds [`SENTINEL`]; else names the first one changed.
fn untouched<'a>(what: &str, values: impl IntoIterator<Item = &'a f32>) -> Result<(), String> {
    match values.into_iter().position(|v| v.to_bits() != SENTINEL.to_bits()) {
        Some(i) => Err(format!("{what} element {i} modified on error")),
        None => Ok(()),
    }
}

/// A slice of `len` small finite values.
fn data(len: usize) -> Vec<f32> {
    (0..len).map(|i| (i % 13) as f32 - 6.0).collect()
}

/// Runs `call` (a forward call of some kind) on a plan of `conv` forced onto each kernel under
/// test, with an output of `output` sentinels: it must return the entry's error, leave the
/// output untouched and run no kernel.
fn fails_cleanly_on_every_kernel(
    e: &Entry,
    conv: &Conv1x1,
    bias: Option<&[f32]>,
    output: usize,
    what: &str,
    call: impl Fn(&Plan, &mut [f32]) -> Result<(), Error>,
) -> Result<(), String> {
    let weights = data(conv.weights_len().map_err(|err| format!("base conv: {err}"))?);
    for kernel in kernels_under_test() {
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        let plan = Plan::new(conv, &weights, bias, options).map_err(|err| format!("plan: {err}"))?;
        let mut y = vec![SENTINEL; output];
        let before = kernel.invocations();
        match call(&plan, &mut y) {
            Err(err) if err == e.expected => {}
            got => return Err(format!("{what} on {kernel}: got {got:?}, want {:?}", e.expected)),
        }
        untouched(&format!("{kernel}: output"), &y)?;
        // No other test in this file runs a non-empty forward, so the counter is ours.
        if kernel.invocations() != before {
            return Err(format!("{kernel}: the kernel ran although the call failed"));
        }
    }
    Ok(())
}

/// Runs one entry; `Err` describes how it went wrong.
fn run(e: &Entry) -> Result<(), String> {
    let expect = |got: Result<(), Error>, what: &str| -> Result<(), String> {
        match got {
            Err(err) if err == e.expected => Ok(()),
            Err(err) => Err(format!("{what}: got {err:?}, want {:?}", e.expected)),
            Ok(()) => Err(format!("{what}: got Ok, want {:?}", e.expected)),
        }
    };
    match &e.call {
        Call::Validate(conv) => expect(conv.validate(), "validate"),
        Call::Plan {
            conv,
            weights,
            bias,
            kernel,
        } => {
            if let Err(err) = conv.validate() {
                expect(Err(err), "validate")?;
            }
            let bias = bias.map(data);
            let options = PlanOptions::default().with_kernel(*kernel);
            expect(
                Plan::new(conv, &data(*weights), bias.as_deref(), options).map(|_| ()),
                "Plan::new",
            )
        }
        Call::Build {
            conv,
            weights,
            order,
            slope,
        } => {
            let w = data(*weights);
            let slopes = slope.map(|(n, v)| vec![v; n]);
            let mut b = Plan::builder(conv, &w).weight_order(*order);
            if let Some(s) = &slopes {
                b = b.prelu_slope(s);
            }
            expect(b.build().map(|_| ()), "PlanBuilder::build")
        }
        Call::ForwardInPlace {
            conv,
            dims,
            input,
            output,
        } => {
            let x = data(*input);
            fails_cleanly_on_every_kernel(e, conv, None, *output, "forward_residual_in_place", |plan, y| {
                plan.forward_residual_in_place(&x, *dims, y, &mut Workspace::new())
            })
        }
        Call::Forward {
            conv,
            dims,
            input,
            residual,
            output,
        } => {
            let bias = data(conv.out_channels);
            let (x, r) = (data(*input), residual.map(data));
            fails_cleanly_on_every_kernel(e, conv, Some(&bias), *output, "forward", |plan, y| {
                plan.forward(&x, *dims, r.as_deref(), y, &mut Workspace::new())
            })
        }
        Call::OutputDims(conv, dims) => {
            expect(conv.output_hw(dims.h, dims.w).map(|_| ()), "output_hw")?;
            expect(conv.output_dims(*dims).map(|_| ()), "output_dims")
        }
        Call::InputLen(conv, dims) => expect(conv.input_len(*dims).map(|_| ()), "input_len"),
        Call::WeightsLen(conv) => expect(conv.weights_len().map(|_| ()), "weights_len"),
        Call::OutputLen(out) => expect(out.len().map(|_| ()), "OutputDims::len"),
        Call::KernelName(name) => expect(KernelId::from_name(name).map(|_| ()), "from_name"),
        Call::Resolve(choice) => expect(choice.resolve().map(|_| ()), "resolve"),
        Call::ForceTiling { kernel, tile } => {
            let options = PlanOptions::default().with_kernel(KernelChoice::Force(*kernel));
            let mut plan = Plan::new(&base(), &data(24), None, options).map_err(|err| format!("plan: {err}"))?;
            expect(plan.force_tile(tile, false), "force_tile")
        }
        Call::RunTile(t) => {
            let mut out = vec![SENTINEL; t.c];
            let bias = t.bias.map(data);
            let residual = t.residual.map(|(len, _)| data(len));
            let before = t.kernel.invocations();
            let result = testing::run_tile(
                t.kernel,
                t.tile,
                t.kc,
                &data(t.a),
                &data(t.b),
                t.m,
                t.n,
                &mut out,
                t.ldc,
                bias.as_deref(),
                true,
                residual.as_deref().zip(t.residual.map(|(_, ldr)| ldr)),
                Activation::Identity,
            );
            expect(result, "run_tile")?;
            untouched("output", &out)?;
            if t.kernel.invocations() != before {
                return Err("the kernel ran although the call failed".into());
            }
            Ok(())
        }
        Call::BackwardNew { conv, weights, slope } => {
            let plan = BackwardPlan::new(conv, &data(*weights), PlanOptions::default());
            match (plan, slope) {
                (Ok(plan), Some((n, v))) => {
                    expect(plan.with_prelu_slope(&vec![*v; *n]).map(|_| ()), "with_prelu_slope")
                }
                (plan, _) => expect(plan.map(|_| ()), "BackwardPlan::new"),
            }
        }
        Call::Backward {
            conv,
            dims,
            pass,
            lens,
            saved_output,
            no_slopes,
        } => {
            let w = data(conv.weights_len().map_err(|err| format!("base conv: {err}"))?);
            let mut plan = BackwardPlan::new(conv, &w, PlanOptions::default()).map_err(|err| format!("plan: {err}"))?;
            if conv.activation == Activation::Prelu && !no_slopes {
                // One negative slope: the derivative then needs z.
                let slopes: Vec<f32> = (0..conv.out_channels)
                    .map(|k| if k == 0 { -0.5 } else { 0.5 })
                    .collect();
                plan = plan.with_prelu_slope(&slopes).map_err(|err| format!("slopes: {err}"))?;
            }
            let (x, dy, saved) = (data(lens.x), data(lens.dy), data(lens.saved));
            let saved = if *saved_output {
                Saved::Output(&saved)
            } else {
                Saved::PreActivation(&saved)
            };
            let mut bufs: Vec<Vec<f32>> = [lens.dx, lens.dw, lens.db, lens.dr]
                .iter()
                .map(|&n| vec![SENTINEL; n])
                .collect();
            let [dx, dw, db, dr] = &mut bufs[..] else {
                unreachable!("four buffers")
            };
            let mut ws = Workspace::new();
            let acc = Accumulate::Overwrite;
            let result = match pass {
                BackwardPass::Data => plan.data(&dy, *dims, dx, acc, &mut ws),
                BackwardPass::Weights => plan.weights(&x, &dy, *dims, dw, acc, &mut ws),
                BackwardPass::Bias => plan.bias(&dy, *dims, db, acc),
                BackwardPass::Activation => plan.activation(&dy, saved, *dims, dr),
                BackwardPass::Step => {
                    let step = Gradients::new().input(dx).weights(dw).bias(db).residual(dr);
                    plan.backward(&x, &dy, saved, *dims, step, &mut ws)
                }
            };
            expect(result, "backward pass")?;
            untouched("gradient", bufs.iter().flatten())
        }
        Call::Shuffle {
            dims,
            channels,
            groups,
            layout,
            input,
            output,
        } => {
            let mut y = vec![SENTINEL; *output];
            expect(
                channel_shuffle(&data(*input), &mut y, *dims, *channels, *groups, *layout),
                "channel_shuffle",
            )?;
            untouched("output", &y)
        }
    }
}

#[test]
fn every_bad_input_returns_its_exact_error_and_leaves_the_output_untouched() {
    let catalogue = catalogue();
    eprintln!(
        "bad-input catalogue: {} entries, forward entries on kernels {:?}",
        catalogue.len(),
        kernels_under_test()
    );
    let mut names = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for e in &catalogue {
        assert!(names.insert(e.name.as_str()), "duplicate entry name {:?}", e.name);
        assert!(!e.expected.to_string().is_empty());
        if let Err(msg) = run(e) {
            failures.push(format!("{}: {msg}", e.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} entries failed:\n{}",
        failures.len(),
        catalogue.len(),
        failures.join("\n")
    );
}

#[test]
fn the_catalogue_covers_every_error_variant_a_call_can_return() {
    // ThreadPool (the OS refusing threads) is the one variant no argument can provoke.
    let catalogue = catalogue();
    let has = |f: fn(&Error) -> bool| catalogue.iter().any(|e| f(&e.expected));
    assert!(has(|e| matches!(e, Error::ZeroSize { .. })));
    assert!(has(|e| matches!(e, Error::GroupsDoNotDivide { .. })));
    assert!(has(|e| matches!(e, Error::ZeroStride(..))));
    assert!(has(|e| matches!(e, Error::LengthMismatch { .. })));
    assert!(has(|e| matches!(e, Error::SizeOverflow { .. })));
    assert!(has(|e| matches!(e, Error::InvalidActivation(_))));
    assert!(has(|e| matches!(e, Error::UnknownKernel(_))));
    assert!(has(|e| matches!(e, Error::InvalidShuffle { .. })));
    assert!(has(|e| matches!(e, Error::InvalidTile(_))));
    // Every target lacks some tier: x86_64 has no NEON, aarch64 no AVX.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    assert!(has(|e| matches!(e, Error::KernelUnavailable(_))));
    #[cfg(target_arch = "x86_64")]
    assert!(!KernelId::Neon.is_available());
    #[cfg(target_arch = "aarch64")]
    assert!(!KernelId::Avx512.is_available() && !KernelId::Avx2.is_available());
}

#[test]
fn empty_inputs_are_a_no_op() {
    let conv = base().with_padding(Padding::uniform(2));
    let plan = Plan::new(&conv, &data(24), Some(&data(6)), PlanOptions::default()).unwrap();
    let mut ws = Workspace::new();
    for dims in [
        InputDims::new(0, 5, 5),
        InputDims::new(3, 0, 5),
        InputDims::new(3, 5, 0),
    ] {
        let out = plan.output_dims(dims).unwrap();
        assert!(out.is_empty());
        assert_eq!(out.len().unwrap(), 0, "{dims:?}");
        let x = vec![0.0; conv.input_len(dims).unwrap()];
        plan.forward(&x, dims, None, &mut [0.0f32; 0], &mut ws).unwrap();
        plan.forward(&x, dims, Some(&[0.0f32; 0]), &mut [0.0f32; 0], &mut ws)
            .unwrap();
    }
    let mut y: [f32; 0] = [];
    channel_shuffle(&[], &mut y, InputDims::new(0, 3, 3), 6, 3, Layout::Nhwc).unwrap();
}

#[test]
fn kernel_names_parse_and_every_available_kernel_can_be_forced() {
    for k in KernelId::ALL {
        assert_eq!(KernelId::from_name(k.name()), Ok(k));
        assert_eq!(KernelId::from_name(&k.name().to_uppercase()), Ok(k));
        assert_eq!(KernelId::from_name(&format!(" {} ", k.name())), Ok(k));
        assert_eq!(k.to_string(), k.name());
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(k));
        match Plan::new(&base(), &data(24), None, options) {
            Ok(p) => {
                assert!(k.is_available());
                assert_eq!(p.kernel(), k);
            }
            Err(e) => {
                assert!(!k.is_available());
                assert_eq!(e, Error::KernelUnavailable(k));
            }
        }
    }
    assert!(available_kernels().contains(&KernelId::Reference));
}

#[test]
fn error_messages_name_expected_and_got() {
    assert_eq!(mismatch("bias", 6, 5).to_string(), "bias: expected 6 elements, got 5");
    assert_eq!(
        Error::GroupsDoNotDivide {
            groups: 4,
            what: "out_channels",
            channels: 6
        }
        .to_string(),
        "groups (4) must divide out_channels (6)"
    );
    assert_eq!(
        Error::ZeroStride(0, 1).to_string(),
        "stride must be at least 1 in both directions, got (0, 1)"
    );
    assert!(Error::KernelUnavailable(KernelId::Neon).to_string().contains("neon"));
}

/// Regression (found by the `api` fuzz target): `checked_product` multiplied the factors in
/// order and reported an overflow before reaching a zero factor, so an empty shape whose other
/// factors overflow was rejected although it has no elements, instead of the documented no-op.
#[test]
fn empty_shapes_whose_other_factors_overflow() {
    let out = OutputDims {
        n: usize::MAX,
        k: 2,
        h: 0,
        w: 1,
    };
    assert!(out.is_empty());
    assert_eq!(out.len(), Ok(0));
    let plan = Plan::new(&base(), &data(24), None, PlanOptions::default()).unwrap();
    let dims = InputDims::new(usize::MAX, 0, 1);
    assert_eq!(base().input_len(dims), Ok(0));
    assert_eq!(
        plan.forward(&[0.0f32; 0], dims, None, &mut [0.0f32; 0], &mut Workspace::new()),
        Ok(())
    );
    let mut y: [f32; 0] = [];
    assert_eq!(channel_shuffle(&[], &mut y, dims, 4, 2, Layout::Nchw), Ok(()));
}
