//! The C API called from Rust: every description field reaches pointwise (compared bit for
//! bit with the Rust API), and each misuse gives its code and message without touching the
//! output.
use pointwise::{Activation, Conv1x1, InputDims, Layout, Padding, Plan, PlanOptions, WeightOrder, Workspace};
use pointwise_capi::*;
use std::ffi::{c_char, CStr};
use std::ptr;

fn last_message() -> String {
    // SAFETY: pw_last_error_message returns a NUL-terminated string valid until the next call.
    unsafe { CStr::from_ptr(pw_last_error_message()) }
        .to_str()
        .unwrap()
        .to_owned()
}

fn desc(c: usize, k: usize) -> PwConvDesc {
    let mut d = std::mem::MaybeUninit::<PwConvDesc>::uninit();
    // SAFETY: d is writable for one PwConvDesc; pw_conv_desc_init fills it on success.
    unsafe {
        assert_eq!(pw_conv_desc_init(d.as_mut_ptr(), c, k), PwStatus::Ok);
        d.assume_init()
    }
}

/// A plan from the C API, or its status and message.
fn create(d: &PwConvDesc, w: &[f32], bias: Option<&[f32]>) -> Result<*mut PwPlan, (PwStatus, String)> {
    let mut plan = ptr::null_mut();
    let (b, b_len) = bias.map_or((ptr::null(), 0), |b| (b.as_ptr(), b.len()));
    // SAFETY: every pointer is valid for its length, and plan is writable.
    let status = unsafe { pw_plan_create(d, w.as_ptr(), w.len(), b, b_len, &mut plan) };
    if status == PwStatus::Ok {
        assert!(!plan.is_null());
        Ok(plan)
    } else {
        assert!(plan.is_null());
        Err((status, last_message()))
    }
}

fn data(len: usize, seed: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * 13 + seed) % 19) as f32 * 0.25 - 2.0).collect()
}

/// Runs `plan` through pw_forward.
fn c_forward(plan: *const PwPlan, x: &[f32], dims: InputDims, residual: Option<&[f32]>, y: &mut [f32]) -> PwStatus {
    let (r, r_len) = residual.map_or((ptr::null(), 0), |r| (r.as_ptr(), r.len()));
    // SAFETY: the plan is live; each buffer is valid for its length and y is exclusive.
    unsafe {
        pw_forward(
            plan,
            x.as_ptr(),
            x.len(),
            dims.n,
            dims.h,
            dims.w,
            r,
            r_len,
            y.as_mut_ptr(),
            y.len(),
            ptr::null_mut(),
        )
    }
}

#[test]
fn every_field_reaches_pointwise() {
    // NHWC, groups, stride, asymmetric padding, input-major weights, PReLU, bias, residual,
    // a forced kernel and two threads.
    let (c, k, g) = (8, 12, 2);
    let slopes: Vec<f32> = (0..k).map(|i| 0.1 * i as f32).collect();
    let mut d = desc(c, k);
    d.groups = g;
    d.stride_h = 2;
    d.stride_w = 1;
    d.pad_top = 1;
    d.pad_left = 2;
    d.pad_bottom = 0;
    d.pad_right = 3;
    d.layout = PwLayout::Nhwc as u32;
    d.weight_order = PwWeightOrder::InputMajor as u32;
    d.activation = PwActivation::Prelu as u32;
    d.prelu_slope = slopes.as_ptr();
    d.prelu_slope_len = slopes.len();
    d.threads = 2;
    d.kernel = c"Portable".as_ptr();
    let w = data(k * c / g, 1);
    let bias = data(k, 2);
    let plan = create(&d, &w, Some(&bias)).unwrap();

    let conv = Conv1x1::new(c, k)
        .with_groups(g)
        .with_stride(2, 1)
        .with_padding(Padding::Explicit {
            top: 1,
            bottom: 0,
            left: 2,
            right: 3,
        })
        .with_layout(Layout::Nhwc)
        .with_activation(Activation::Prelu);
    let rust = Plan::builder(&conv, &w)
        .weight_order(WeightOrder::InputMajor)
        .bias(&bias)
        .prelu_slope(&slopes)
        .options(PlanOptions::default().with_kernel(pointwise::KernelChoice::Force(pointwise::KernelId::Portable)))
        .build()
        .unwrap();

    let dims = InputDims::new(2, 7, 5);
    let x = data(rust.input_len(dims).unwrap(), 3);
    let residual = data(rust.output_len(dims).unwrap(), 4);
    let mut expected = vec![0.0; residual.len()];
    rust.forward(&x, dims, Some(&residual), &mut expected, &mut Workspace::new())
        .unwrap();

    let mut out_len = 0;
    let mut out_dims = PwOutputDims::default();
    let mut name: *const c_char = ptr::null();
    // SAFETY: the plan is live and every out-pointer is writable.
    unsafe {
        assert_eq!(pw_plan_output_len(plan, 2, 7, 5, &mut out_len), PwStatus::Ok);
        assert_eq!(pw_plan_output_dims(plan, 2, 7, 5, &mut out_dims), PwStatus::Ok);
        assert_eq!(pw_plan_kernel_name(plan, &mut name), PwStatus::Ok);
        assert_eq!(CStr::from_ptr(name), c"portable");
    }
    let od = rust.output_dims(dims).unwrap();
    assert_eq!(
        (out_dims.n, out_dims.k, out_dims.h, out_dims.w),
        (od.n, od.k, od.h, od.w)
    );
    assert_eq!(out_len, expected.len());

    let mut y = vec![0.0; out_len];
    assert_eq!(c_forward(plan, &x, dims, Some(&residual), &mut y), PwStatus::Ok);
    assert_eq!(last_message(), "");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&y), bits(&expected));

    // In place, with a workspace.
    let mut ws = ptr::null_mut();
    let mut y2 = residual.clone();
    // SAFETY: ws is writable; the plan and workspace are live; the buffers are valid.
    unsafe {
        assert_eq!(pw_workspace_create(&mut ws), PwStatus::Ok);
        let status = pw_forward_residual_in_place(plan, x.as_ptr(), x.len(), 2, 7, 5, y2.as_mut_ptr(), y2.len(), ws);
        assert_eq!(status, PwStatus::Ok);
        assert_eq!(pw_workspace_free(ws), PwStatus::Ok);
        assert_eq!(pw_plan_free(plan), PwStatus::Ok);
    }
    assert_eq!(bits(&y2), bits(&expected));
}

#[test]
fn activations_and_their_parameters() {
    let w = data(6, 5);
    let x = data(3 * 4, 6);
    let dims = InputDims::new(1, 2, 2);
    let cases: [(PwActivation, Activation); 13] = [
        (PwActivation::Identity, Activation::Identity),
        (PwActivation::Relu, Activation::Relu),
        (PwActivation::Relu6, Activation::Relu6),
        (PwActivation::Clamp, Activation::Clamp { min: -0.5, max: 1.5 }),
        (PwActivation::LeakyRelu, Activation::LeakyRelu { alpha: 0.3 }),
        (PwActivation::Prelu, Activation::Prelu),
        (PwActivation::HardSwish, Activation::HardSwish),
        (
            PwActivation::HardSigmoid,
            Activation::HardSigmoid { alpha: 0.25, beta: 0.4 },
        ),
        (PwActivation::Sigmoid, Activation::Sigmoid),
        (PwActivation::Tanh, Activation::Tanh),
        (PwActivation::Silu, Activation::Silu),
        (PwActivation::Gelu, Activation::Gelu),
        (PwActivation::GeluTanh, Activation::GeluTanh),
    ];
    let slopes = [0.2f32, 0.7];
    for (c_act, act) in cases {
        let mut d = desc(3, 2);
        d.activation = c_act as u32;
        d.clamp_min = -0.5;
        d.clamp_max = 1.5;
        d.leaky_relu_alpha = 0.3;
        d.hard_sigmoid_alpha = 0.25;
        d.hard_sigmoid_beta = 0.4;
        let conv = Conv1x1::new(3, 2).with_activation(act);
        let mut builder = Plan::builder(&conv, &w);
        if c_act == PwActivation::Prelu {
            d.prelu_slope = slopes.as_ptr();
            d.prelu_slope_len = 2;
            builder = builder.prelu_slope(&slopes);
        }
        let plan = create(&d, &w, None).unwrap();
        let rust = builder.build().unwrap();
        let (mut a, mut b) = (vec![0.0f32; 8], vec![0.0f32; 8]);
        assert_eq!(c_forward(plan, &x, dims, None, &mut a), PwStatus::Ok);
        rust.forward(&x, dims, None, &mut b, &mut Workspace::new()).unwrap();
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{act:?}"
        );
        // SAFETY: a live plan, freed once.
        assert_eq!(unsafe { pw_plan_free(plan) }, PwStatus::Ok);
    }
}

#[test]
fn plan_errors_have_their_codes() {
    let w = [1.0f32; 6];
    let err = |d: &PwConvDesc, w: &[f32], bias: Option<&[f32]>| create(d, w, bias).unwrap_err();

    let (s, m) = err(&desc(0, 2), &[], None);
    assert_eq!(
        (s, m.as_str()),
        (PwStatus::ZeroSize, "in_channels must be at least 1, got 0")
    );
    let mut d = desc(3, 2);
    d.groups = 2;
    assert_eq!(err(&d, &w, None).0, PwStatus::GroupsDoNotDivide);
    let mut d = desc(3, 2);
    d.stride_w = 0;
    assert_eq!(err(&d, &w, None).0, PwStatus::ZeroStride);
    let (s, m) = err(&desc(3, 2), &w[..5], None);
    assert_eq!(
        (s, m.as_str()),
        (PwStatus::LengthMismatch, "weights: expected 6 elements, got 5")
    );
    let (s, m) = err(&desc(3, 2), &w, Some(&[1.0]));
    assert_eq!(
        (s, m.as_str()),
        (PwStatus::LengthMismatch, "bias: expected 2 elements, got 1")
    );
    assert_eq!(err(&desc(usize::MAX, usize::MAX), &w, None).0, PwStatus::SizeOverflow);

    let mut d = desc(3, 2);
    d.activation = PwActivation::LeakyRelu as u32;
    d.leaky_relu_alpha = f32::NAN;
    assert_eq!(err(&d, &w, None).0, PwStatus::InvalidActivation);
    let mut d = desc(3, 2);
    d.activation = PwActivation::Prelu as u32;
    assert_eq!(err(&d, &w, None).0, PwStatus::LengthMismatch);
    let mut d = desc(3, 2);
    let slopes = [0.1f32, 0.2];
    d.prelu_slope = slopes.as_ptr();
    d.prelu_slope_len = 2;
    assert_eq!(err(&d, &w, None).0, PwStatus::InvalidActivation);

    // Kernel names: unknown, not UTF-8, unavailable (when this CPU lacks one).
    let mut d = desc(3, 2);
    d.kernel = c"nope".as_ptr();
    let (s, m) = err(&d, &w, None);
    assert_eq!(s, PwStatus::UnknownKernel);
    assert!(m.starts_with("unknown kernel name `nope`"), "{m}");
    d.kernel = c"\xff\xfe".as_ptr();
    assert_eq!(err(&d, &w, None).0, PwStatus::InvalidArgument);
    d.kernel = c" AUTO ".as_ptr();
    // SAFETY: a live plan, freed once.
    unsafe { pw_plan_free(create(&d, &w, None).unwrap()) };
    if let Some(missing) = pointwise::KernelId::ALL.into_iter().find(|k| !k.is_available()) {
        let name = std::ffi::CString::new(missing.name()).unwrap();
        d.kernel = name.as_ptr();
        assert_eq!(err(&d, &w, None).0, PwStatus::KernelUnavailable);
    }

    // Enum values out of range.
    for field in 0..3 {
        let mut d = desc(3, 2);
        match field {
            0 => d.layout = 2,
            1 => d.weight_order = 9,
            _ => d.activation = 13,
        }
        let (s, m) = err(&d, &w, None);
        assert_eq!(s, PwStatus::InvalidArgument);
        assert!(m.contains("is not a pw_"), "{m}");
    }

    // NULL pointers.
    let d = desc(3, 2);
    let mut plan = ptr::null_mut();
    // SAFETY: the NULL arguments are the ones under test; the others are valid.
    unsafe {
        assert_eq!(
            pw_plan_create(ptr::null(), w.as_ptr(), 6, ptr::null(), 0, &mut plan),
            PwStatus::NullPointer
        );
        assert_eq!(
            pw_plan_create(&d, ptr::null(), 6, ptr::null(), 0, &mut plan),
            PwStatus::NullPointer
        );
        assert_eq!(
            pw_plan_create(&d, w.as_ptr(), 6, ptr::null(), 2, &mut plan),
            PwStatus::NullPointer
        );
        assert_eq!(last_message(), "bias is NULL (none) but its length is 2");
        assert_eq!(
            pw_plan_create(&d, w.as_ptr(), 6, ptr::null(), 0, ptr::null_mut()),
            PwStatus::NullPointer
        );
        assert_eq!(pw_conv_desc_init(ptr::null_mut(), 1, 1), PwStatus::NullPointer);
        assert_eq!(pw_workspace_create(ptr::null_mut()), PwStatus::NullPointer);
        assert_eq!(pw_plan_free(ptr::null_mut()), PwStatus::Ok);
        assert_eq!(pw_workspace_free(ptr::null_mut()), PwStatus::Ok);
    }
}

#[test]
fn forward_errors_leave_the_output_untouched() {
    let d = desc(3, 2);
    let w = data(6, 1);
    let plan = create(&d, &w, None).unwrap();
    let x = data(27, 2);
    let dims = InputDims::new(1, 3, 3);
    let sentinel = f32::from_bits(0x7fc0_1234);
    let untouched = |y: &[f32]| y.iter().all(|v| v.to_bits() == sentinel.to_bits());

    let mut y = vec![sentinel; 17];
    assert_eq!(c_forward(plan, &x, dims, None, &mut y), PwStatus::LengthMismatch);
    assert_eq!(last_message(), "output: expected 18 elements, got 17");
    assert!(untouched(&y));
    let mut y = vec![sentinel; 18];
    assert_eq!(c_forward(plan, &x[..26], dims, None, &mut y), PwStatus::LengthMismatch);
    assert_eq!(
        c_forward(plan, &x, dims, Some(&[0.0; 3]), &mut y),
        PwStatus::LengthMismatch
    );
    assert!(untouched(&y));

    // SAFETY: the invalid arguments are the ones under test; the others are valid.
    unsafe {
        let status = pw_forward(
            ptr::null(),
            x.as_ptr(),
            27,
            1,
            3,
            3,
            ptr::null(),
            0,
            y.as_mut_ptr(),
            18,
            ptr::null_mut(),
        );
        assert_eq!(status, PwStatus::NullPointer);
        let status = pw_forward(
            plan,
            ptr::null(),
            27,
            1,
            3,
            3,
            ptr::null(),
            0,
            y.as_mut_ptr(),
            18,
            ptr::null_mut(),
        );
        assert_eq!(status, PwStatus::NullPointer);
        assert_eq!(last_message(), "x is NULL but its length is 27");
        // The output overlapping the input, and a residual overlapping the output.
        let mut buf = vec![0.0f32; 45];
        let p = buf.as_mut_ptr();
        let status = pw_forward(plan, p, 27, 1, 3, 3, ptr::null(), 0, p.add(20), 18, ptr::null_mut());
        assert_eq!(status, PwStatus::InvalidArgument);
        assert_eq!(last_message(), "x and y overlap");
        let status = pw_forward(plan, x.as_ptr(), 27, 1, 3, 3, p, 18, p.add(10), 18, ptr::null_mut());
        assert_eq!(status, PwStatus::InvalidArgument);
        // A misaligned output.
        let mut bytes = vec![0u32; 20];
        let odd = bytes.as_mut_ptr().cast::<u8>().add(1).cast::<f32>();
        let status = pw_forward(plan, x.as_ptr(), 27, 1, 3, 3, ptr::null(), 0, odd, 18, ptr::null_mut());
        assert_eq!(status, PwStatus::InvalidArgument);
        assert!(bytes.iter().all(|&b| b == 0));
        // An empty input: NULL buffers with length 0 are fine, and nothing is written.
        let status = pw_forward(
            plan,
            ptr::null(),
            0,
            0,
            3,
            3,
            ptr::null(),
            0,
            ptr::null_mut(),
            0,
            ptr::null_mut(),
        );
        assert_eq!(status, PwStatus::Ok);
        // Length queries that overflow.
        let mut len = 7usize;
        assert_eq!(
            pw_plan_output_len(plan, usize::MAX, 3, 3, &mut len),
            PwStatus::SizeOverflow
        );
        assert_eq!(
            pw_plan_input_len(plan, usize::MAX, 3, 3, &mut len),
            PwStatus::SizeOverflow
        );
        assert_eq!(len, 7);
        assert_eq!(
            pw_plan_output_len(plan, 1, 3, 3, ptr::null_mut()),
            PwStatus::NullPointer
        );
        assert_eq!(pw_plan_free(plan), PwStatus::Ok);
    }
}

#[test]
fn one_plan_on_many_threads() {
    let d = desc(16, 32);
    let w = data(16 * 32, 1);
    let plan = create(&d, &w, None).unwrap() as usize;
    let dims = InputDims::new(1, 10, 10);
    let x = data(16 * 100, 2);
    let mut first = vec![0.0f32; 3200];
    assert_eq!(
        c_forward(plan as *const PwPlan, &x, dims, None, &mut first),
        PwStatus::Ok
    );
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let mut y = vec![0.0f32; 3200];
                assert_eq!(c_forward(plan as *const PwPlan, &x, dims, None, &mut y), PwStatus::Ok);
                assert_eq!(y, first);
                // Messages are per thread.
                let mut small = vec![0.0f32; 1];
                assert_eq!(
                    c_forward(plan as *const PwPlan, &x, dims, None, &mut small),
                    PwStatus::LengthMismatch
                );
                assert_eq!(last_message(), "output: expected 3200 elements, got 1");
            });
        }
    });
    assert_eq!(last_message(), "");
    // SAFETY: a live plan, freed once, after every thread is done.
    assert_eq!(unsafe { pw_plan_free(plan as *mut PwPlan) }, PwStatus::Ok);
}

#[test]
fn version_and_names() {
    // SAFETY: static NUL-terminated strings.
    unsafe {
        assert_eq!(
            CStr::from_ptr(pw_version()).to_str().unwrap(),
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(
            CStr::from_ptr(pw_status_name(PwStatus::Panic as i32)),
            c"PW_STATUS_PANIC"
        );
    }
}
