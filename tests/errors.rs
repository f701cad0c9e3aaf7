//! Every invalid argument returns its typed error and leaves the output untouched.
use pointwise::*;

const SENTINEL: f32 = -7.25;

fn conv() -> Conv1x1 {
    Conv1x1::new(4, 6)
}

fn plan_err(conv: &Conv1x1, w: &[f32], b: Option<&[f32]>, opts: PlanOptions) -> Error {
    Plan::new(conv, w, b, opts).expect_err("plan should fail")
}

#[test]
fn descriptor_errors() {
    let w = vec![0.0; 24];
    let d = PlanOptions::default();
    assert_eq!(
        plan_err(&Conv1x1::new(0, 6), &w, None, d),
        Error::ZeroSize { what: "in_channels" }
    );
    assert_eq!(
        plan_err(&Conv1x1::new(4, 0), &w, None, d),
        Error::ZeroSize { what: "out_channels" }
    );
    assert_eq!(
        plan_err(&conv().with_groups(0), &w, None, d),
        Error::ZeroSize { what: "groups" }
    );
    assert_eq!(
        plan_err(&conv().with_groups(3), &w, None, d),
        Error::GroupsDoNotDivide {
            groups: 3,
            what: "in_channels",
            channels: 4
        }
    );
    assert_eq!(
        plan_err(&conv().with_groups(4), &w, None, d),
        Error::GroupsDoNotDivide {
            groups: 4,
            what: "out_channels",
            channels: 6
        }
    );
    assert_eq!(
        plan_err(&conv().with_stride(0, 1), &w, None, d),
        Error::ZeroStride(0, 1)
    );
    assert_eq!(
        plan_err(&conv().with_stride(2, 0), &w, None, d),
        Error::ZeroStride(2, 0)
    );
    for (act, _) in [
        (
            Activation::Clamp {
                min: f32::NAN,
                max: 1.0,
            },
            0,
        ),
        (
            Activation::Clamp {
                min: 0.0,
                max: f32::NAN,
            },
            0,
        ),
        (Activation::Clamp { min: 2.0, max: 1.0 }, 0),
        (Activation::LeakyRelu { alpha: f32::INFINITY }, 0),
        (Activation::LeakyRelu { alpha: f32::NAN }, 0),
    ] {
        assert!(matches!(
            plan_err(&conv().with_activation(act), &w, None, d),
            Error::InvalidActivation(_)
        ));
    }
    let huge = Conv1x1::new(usize::MAX, usize::MAX);
    assert_eq!(
        plan_err(&huge, &w, None, d),
        Error::SizeOverflow { what: "weights length" }
    );
}

#[test]
fn weight_and_bias_lengths() {
    let d = PlanOptions::default();
    assert_eq!(
        plan_err(&conv(), &[0.0; 23], None, d),
        Error::LengthMismatch {
            what: "weights",
            expected: 24,
            got: 23
        }
    );
    assert_eq!(
        plan_err(&conv(), &[0.0; 25], None, d),
        Error::LengthMismatch {
            what: "weights",
            expected: 24,
            got: 25
        }
    );
    // Grouped weights are [K, C/G].
    assert_eq!(
        plan_err(&conv().with_groups(2), &[0.0; 24], None, d),
        Error::LengthMismatch {
            what: "weights",
            expected: 12,
            got: 24
        }
    );
    assert_eq!(
        plan_err(&conv(), &[0.0; 24], Some(&[0.0; 5]), d),
        Error::LengthMismatch {
            what: "bias",
            expected: 6,
            got: 5
        }
    );
    assert_eq!(
        plan_err(&conv(), &[0.0; 24], Some(&[0.0; 7]), d),
        Error::LengthMismatch {
            what: "bias",
            expected: 6,
            got: 7
        }
    );
}

#[test]
fn unavailable_and_unknown_kernels() {
    let w = vec![0.0; 24];
    for k in KernelId::ALL {
        let opts = PlanOptions::default().with_kernel(KernelChoice::Force(k));
        match Plan::new(&conv(), &w, None, opts) {
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
    // x86_64 never has NEON; aarch64 never has AVX.
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        plan_err(
            &conv(),
            &w,
            None,
            PlanOptions::default().with_kernel(KernelChoice::Force(KernelId::Neon))
        ),
        Error::KernelUnavailable(KernelId::Neon)
    );
    #[cfg(target_arch = "aarch64")]
    assert_eq!(
        plan_err(
            &conv(),
            &w,
            None,
            PlanOptions::default().with_kernel(KernelChoice::Force(KernelId::Avx512))
        ),
        Error::KernelUnavailable(KernelId::Avx512)
    );
    assert_eq!(KernelId::from_name("sse9"), Err(Error::UnknownKernel("sse9".into())));
    assert_eq!(KernelId::from_name("AVX2"), Ok(KernelId::Avx2));
}

/// Runs forward with the given slice lengths and checks the error and the untouched output.
fn forward_err(kernel: KernelId, dims: InputDims, x_len: usize, r_len: Option<usize>, y_len: usize) -> Error {
    let conv = conv().with_stride(2, 1).with_padding(Padding::uniform(1));
    let plan = Plan::new(
        &conv,
        &[0.5; 24],
        Some(&[1.0; 6]),
        PlanOptions::default().with_kernel(KernelChoice::Force(kernel)),
    )
    .unwrap();
    let x = vec![1.0; x_len];
    let r = r_len.map(|n| vec![1.0; n]);
    let mut y = vec![SENTINEL; y_len];
    let err = plan
        .forward(&x, dims, r.as_deref(), &mut y, &mut Workspace::new())
        .expect_err("forward should fail");
    assert!(
        y.iter().all(|&v| v == SENTINEL),
        "{kernel}: output modified on error {err}"
    );
    err
}

#[test]
fn forward_length_errors_leave_output_untouched() {
    // 5x5 input, pad 1, stride (2, 1): Ho = (5 + 2 - 1) / 2 + 1 = 4, Wo = 7.
    let dims = InputDims::new(2, 5, 5);
    let (x_len, y_len) = (2 * 4 * 25, 2 * 6 * 4 * 7);
    for k in available_kernels() {
        let mismatch = |what, expected, got| Error::LengthMismatch { what, expected, got };
        assert_eq!(
            forward_err(k, dims, x_len - 1, None, y_len),
            mismatch("input", x_len, x_len - 1)
        );
        assert_eq!(
            forward_err(k, dims, x_len + 1, None, y_len),
            mismatch("input", x_len, x_len + 1)
        );
        assert_eq!(
            forward_err(k, dims, x_len, None, y_len - 1),
            mismatch("output", y_len, y_len - 1)
        );
        assert_eq!(
            forward_err(k, dims, x_len, None, y_len + 1),
            mismatch("output", y_len, y_len + 1)
        );
        assert_eq!(
            forward_err(k, dims, x_len, Some(y_len - 1), y_len),
            mismatch("residual", y_len, y_len - 1)
        );
        assert_eq!(
            forward_err(k, dims, x_len, Some(y_len + 1), y_len),
            mismatch("residual", y_len, y_len + 1)
        );
        // A residual of another layout's shape has the same length: only length is checkable.
        assert_eq!(
            forward_err(k, InputDims::new(usize::MAX, usize::MAX, 2), 0, None, 0),
            Error::SizeOverflow { what: "input length" }
        );
        assert_eq!(
            forward_err(k, InputDims::new(1, usize::MAX, 1), 0, None, 0),
            Error::SizeOverflow { what: "input length" }
        );
    }
}

#[test]
fn padded_extent_overflow() {
    let conv = Conv1x1::new(1, 1).with_padding(Padding::Explicit {
        top: usize::MAX,
        bottom: 1,
        left: 0,
        right: 0,
    });
    assert_eq!(
        conv.output_hw(1, 1),
        Err(Error::SizeOverflow {
            what: "padded input extent"
        })
    );
}

#[test]
fn empty_inputs_are_a_no_op() {
    let conv = conv().with_padding(Padding::uniform(2));
    let plan = Plan::new(&conv, &[1.0; 24], Some(&[1.0; 6]), PlanOptions::default()).unwrap();
    let mut ws = Workspace::new();
    for dims in [
        InputDims::new(0, 5, 5),
        InputDims::new(3, 0, 5),
        InputDims::new(3, 5, 0),
    ] {
        let out = plan.output_dims(dims).unwrap();
        assert_eq!(out.len().unwrap(), 0, "{dims:?}");
        let x = vec![0.0; conv.input_len(dims).unwrap()];
        plan.forward(&x, dims, None, &mut [], &mut ws).unwrap();
    }
    // The lengths are still checked.
    let mut y = [SENTINEL; 1];
    assert_eq!(
        plan.forward(&[], InputDims::new(0, 5, 5), None, &mut y, &mut ws),
        Err(Error::LengthMismatch {
            what: "output",
            expected: 0,
            got: 1
        })
    );
    assert_eq!(y[0], SENTINEL);
}

#[test]
fn shuffle_errors() {
    let x = [0.0; 12];
    let mut y = [SENTINEL; 12];
    let d = InputDims::new(1, 2, 1);
    assert_eq!(
        channel_shuffle(&x, &mut y, d, 6, 4, Layout::Nchw),
        Err(Error::InvalidShuffle { groups: 4, channels: 6 })
    );
    assert_eq!(
        channel_shuffle(&x, &mut y, d, 6, 0, Layout::Nchw),
        Err(Error::InvalidShuffle { groups: 0, channels: 6 })
    );
    assert_eq!(
        channel_shuffle(&x[..11], &mut y, d, 6, 2, Layout::Nhwc),
        Err(Error::LengthMismatch {
            what: "input",
            expected: 12,
            got: 11
        })
    );
    assert_eq!(
        channel_shuffle(&x, &mut y[..10], d, 6, 2, Layout::Nhwc),
        Err(Error::LengthMismatch {
            what: "output",
            expected: 12,
            got: 10
        })
    );
    assert!(y.iter().all(|&v| v == SENTINEL));
}

#[test]
fn errors_display_expected_and_got() {
    let e = Error::LengthMismatch {
        what: "bias",
        expected: 6,
        got: 5,
    };
    assert_eq!(e.to_string(), "bias: expected 6 elements, got 5");
}
