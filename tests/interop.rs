//! The framework adapters (features `candle`, `ndarray`) against the plain API, bit for bit,
//! and the candle op's gradients against candle's own `conv2d` path. Run with
//! `cargo test --release --features candle,ndarray --test interop` (`scripts/test.sh` does).

/// Integer-valued data in [-4, 4]: every product and sum below is exact in f32, so any
/// correct computation gives the same bits.
#[allow(dead_code)]
fn small_integers(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 9) as f32 - 4.0
        })
        .collect()
}

#[cfg(feature = "ndarray")]
mod interop_ndarray {
    use super::small_integers;
    use ndarray::{Array4, ShapeBuilder};
    use pointwise::interop::ndarray::{forward, forward_residual_in_place};
    use pointwise::{Activation, Conv1x1, InputDims, Layout, Padding, Plan, PlanOptions, Workspace};

    fn plain(plan: &Plan, x: &[f32], dims: InputDims, residual: Option<&[f32]>) -> Vec<f32> {
        let mut y = vec![0.0; plan.output_len(dims).unwrap()];
        plan.forward(x, dims, residual, &mut y, &mut Workspace::new()).unwrap();
        y
    }

    #[test]
    fn views_give_the_plain_api_bits_in_both_layouts() {
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for (c, k, groups, stride, pad) in [(3, 2, 1, 1, 0), (16, 24, 4, 2, 1), (33, 65, 1, 1, 0)] {
                let conv = Conv1x1::new(c, k)
                    .with_layout(layout)
                    .with_groups(groups)
                    .with_stride(stride, stride)
                    .with_padding(Padding::uniform(pad))
                    .with_activation(Activation::Relu6);
                let w = small_integers(k * c / groups, 1);
                let b = small_integers(k, 2);
                let plan = Plan::new(&conv, &w, Some(&b), PlanOptions::from_env().unwrap()).unwrap();
                let (n, h, wd) = (2, 7, 5);
                let dims = InputDims::new(n, h, wd);
                let out = plan.output_dims(dims).unwrap();
                let x_shape = match layout {
                    Layout::Nchw => (n, c, h, wd),
                    _ => (n, h, wd, c),
                };
                let y_shape = match layout {
                    Layout::Nchw => (out.n, out.k, out.h, out.w),
                    _ => (out.n, out.h, out.w, out.k),
                };
                let x = Array4::from_shape_vec(x_shape, small_integers(n * c * h * wd, 3)).unwrap();
                let r = Array4::from_shape_vec(y_shape, small_integers(out.len().unwrap(), 4)).unwrap();
                let mut ws = Workspace::new();

                let mut y = Array4::<f32>::zeros(y_shape);
                forward(&plan, x.view(), Some(r.view()), y.view_mut(), &mut ws).unwrap();
                let want = plain(&plan, x.as_slice().unwrap(), dims, Some(r.as_slice().unwrap()));
                assert_eq!(y.as_slice().unwrap(), &want[..], "{layout:?} {c}->{k} g{groups}");

                let mut y_in_place = r.clone();
                forward_residual_in_place(&plan, x.view(), y_in_place.view_mut(), &mut ws).unwrap();
                assert_eq!(
                    y_in_place.as_slice().unwrap(),
                    &want[..],
                    "in place {layout:?} {c}->{k}"
                );
            }
        }
    }

    #[test]
    fn an_nhwc_plan_reads_nchw_axes_over_channels_last_memory_in_place() {
        let conv = Conv1x1::new(8, 4).with_layout(Layout::Nhwc);
        let plan = Plan::new(&conv, &small_integers(32, 5), None, PlanOptions::from_env().unwrap()).unwrap();
        // Logical [N, C, H, W] = [2, 8, 3, 5] with strides of channels-last memory.
        let data = small_integers(2 * 3 * 5 * 8, 6);
        let x = ndarray::ArrayView4::from_shape((2, 8, 3, 5).strides((120, 1, 40, 8)), &data).unwrap();
        let mut y = Array4::<f32>::zeros((2, 4, 3, 5).f());
        let mut y_nhwc = Array4::<f32>::zeros((2, 3, 5, 4));
        let y_view = y_nhwc.view_mut().permuted_axes([0, 3, 1, 2]);
        forward(&plan, x, None, y_view, &mut Workspace::new()).unwrap();
        let want = plain(&plan, &data, InputDims::new(2, 3, 5), None);
        assert_eq!(y_nhwc.as_slice().unwrap(), &want[..]);
        // A Fortran-order output is neither reading: an error, the output untouched.
        let e = forward(&plan, x, None, y.view_mut(), &mut Workspace::new()).unwrap_err();
        assert!(matches!(e, pointwise::Error::ArrayView { what: "output", .. }), "{e}");
        assert!(y.iter().all(|&v| v == 0.0));
    }
}

#[cfg(feature = "candle")]
mod interop_candle {
    use super::small_integers;
    use candle_core::{DType, Device, Module, Tensor, Var};
    use pointwise::interop::candle::{conv1x1, Conv1x1Config, PointwiseConv2d};
    use pointwise::{Activation, Conv1x1, InputDims, Padding, Plan, PlanOptions, Workspace};

    fn tensor(data: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn configs() -> Vec<(usize, usize, Conv1x1Config)> {
        let options = PlanOptions::from_env().unwrap();
        let base = Conv1x1Config::default().with_options(options);
        vec![
            (3, 2, base),
            (16, 24, base.with_stride(2).with_padding(1).with_groups(4)),
            (33, 65, base.with_activation(Activation::Relu6)),
            (
                8,
                8,
                base.with_groups(8)
                    .with_activation(Activation::LeakyRelu { alpha: 0.5 }),
            ),
        ]
    }

    /// What `Plan::forward` gives for the same convolution and data.
    fn plain(
        c: usize,
        k: usize,
        cfg: &Conv1x1Config,
        w: &[f32],
        b: Option<&[f32]>,
        x: &[f32],
        dims: InputDims,
    ) -> Vec<f32> {
        let conv = Conv1x1::new(c, k)
            .with_stride(cfg.stride, cfg.stride)
            .with_padding(Padding::uniform(cfg.padding))
            .with_groups(cfg.groups)
            .with_activation(cfg.activation);
        let plan = Plan::new(&conv, w, b, cfg.options).unwrap();
        let mut y = vec![0.0; plan.output_len(dims).unwrap()];
        plan.forward(x, dims, None, &mut y, &mut Workspace::new()).unwrap();
        y
    }

    #[test]
    fn the_op_and_the_module_give_the_plain_api_bits() {
        for (c, k, cfg) in configs() {
            let cg = c / cfg.groups;
            let (n, h, wd) = (2, 7, 5);
            let w = small_integers(k * cg, 1);
            let b = small_integers(k, 2);
            let x = small_integers(n * c * h * wd, 3);
            let dims = InputDims::new(n, h, wd);
            let wt = tensor(w.clone(), &[k, cg, 1, 1]);
            let bt = tensor(b.clone(), &[k]);
            let xt = tensor(x.clone(), &[n, c, h, wd]);
            for bias in [true, false] {
                let want = plain(c, k, &cfg, &w, bias.then_some(&b[..]), &x, dims);
                let by_op = conv1x1(&xt, &wt, bias.then_some(&bt), &cfg).unwrap();
                assert_eq!(values(&by_op), want, "op {c}->{k} bias {bias}");
                let module = PointwiseConv2d::new(wt.clone(), bias.then(|| bt.clone()), cfg).unwrap();
                let by_module = module.forward(&xt).unwrap();
                assert_eq!(by_module.dims(), by_op.dims());
                assert_eq!(values(&by_module), want, "module {c}->{k} bias {bias}");
            }
        }
    }

    #[test]
    fn bf16_tensors_give_the_plain_api_bits_rounded_once() {
        // Values exact in bf16 with fractions, so that sums round in f32 and outputs in bf16.
        let bf = |v: Vec<f32>| -> Vec<f32> {
            v.iter()
                .map(|&x| pointwise::bf16::from_f32(x * 0.3719).to_f32())
                .collect()
        };
        let to_bf16 = |t: Tensor| t.to_dtype(DType::BF16).unwrap();
        for (c, k, cfg) in configs() {
            let cg = c / cfg.groups;
            let (n, h, wd) = (2, 7, 5);
            let (w, b, x) = (
                bf(small_integers(k * cg, 4)),
                bf(small_integers(k, 5)),
                bf(small_integers(n * c * h * wd, 6)),
            );
            let dims = InputDims::new(n, h, wd);
            let want: Vec<f32> = plain(c, k, &cfg, &w, Some(&b), &x, dims)
                .iter()
                .map(|&v| pointwise::bf16::from_f32(v).to_f32())
                .collect();
            let (wt, bt) = (tensor(w.clone(), &[k, cg, 1, 1]), tensor(b.clone(), &[k]));
            // x bf16 (contiguous, and a transposed view gathered), weights bf16 or f32.
            let xt = to_bf16(tensor(x.clone(), &[n, c, h, wd]));
            let xt_view = to_bf16(tensor(x.clone(), &[n, c, wd, h])).transpose(2, 3).unwrap();
            // [N, C, W, H] transposed to [N, C, H, W]: the view's values in NCHW order.
            let x_view = values(&xt_view.to_dtype(DType::F32).unwrap());
            let want_view: Vec<f32> = plain(c, k, &cfg, &w, Some(&b), &x_view, dims)
                .iter()
                .map(|&v| pointwise::bf16::from_f32(v).to_f32())
                .collect();
            for (wt, bt) in [(to_bf16(wt.clone()), to_bf16(bt.clone())), (wt.clone(), bt.clone())] {
                let y = conv1x1(&xt, &wt, Some(&bt), &cfg).unwrap();
                assert_eq!(y.dtype(), DType::BF16);
                assert_eq!(values(&y.to_dtype(DType::F32).unwrap()), want, "op {c}->{k}");
                let module = PointwiseConv2d::new(wt.clone(), Some(bt.clone()), cfg).unwrap();
                let y = module.forward(&xt).unwrap();
                assert_eq!(y.dtype(), DType::BF16);
                assert_eq!(values(&y.to_dtype(DType::F32).unwrap()), want, "module {c}->{k}");
                let y = conv1x1(&xt_view, &wt, Some(&bt), &cfg).unwrap();
                assert_eq!(values(&y.to_dtype(DType::F32).unwrap()), want_view, "view {c}->{k}");
            }
        }
    }

    #[test]
    fn non_contiguous_inputs_are_gathered_and_integer_data_matches_candle_conv2d() {
        let (c, k, n, h, wd) = (6, 10, 2, 5, 4);
        let cfg = Conv1x1Config::default().with_stride(2).with_padding(1).with_groups(2);
        let w = tensor(small_integers(k * c / 2, 7), &[k, c / 2, 1, 1]);
        let b = tensor(small_integers(k, 8), &[k]);
        // A [N, C, W, H] tensor transposed to [N, C, H, W]: strided, not contiguous.
        let x = tensor(small_integers(n * c * wd * h, 9), &[n, c, wd, h])
            .transpose(2, 3)
            .unwrap();
        assert!(!x.is_contiguous());
        let ours = conv1x1(&x, &w, Some(&b), &cfg).unwrap();
        let candle = x
            .conv2d(&w, cfg.padding, cfg.stride, 1, cfg.groups)
            .unwrap()
            .broadcast_add(&b.reshape((1, k, 1, 1)).unwrap())
            .unwrap();
        assert_eq!(ours.dims(), candle.dims());
        assert_eq!(values(&ours), values(&candle));
        let contiguous = conv1x1(&x.contiguous().unwrap(), &w, Some(&b), &cfg).unwrap();
        assert_eq!(values(&ours), values(&contiguous));
    }

    #[test]
    fn gradients_are_candles_own() {
        for activation in [
            Activation::Identity,
            Activation::Relu,
            Activation::Silu,
            Activation::HardSwish,
        ] {
            let (c, k, n, h, wd) = (8, 6, 2, 5, 5);
            let cfg = Conv1x1Config::default()
                .with_stride(2)
                .with_padding(1)
                .with_groups(2)
                .with_activation(activation);
            let x = Var::from_tensor(&tensor(small_integers(n * c * h * wd, 10), &[n, c, h, wd])).unwrap();
            let w = Var::from_tensor(&tensor(small_integers(k * c / 2, 11), &[k, c / 2, 1, 1])).unwrap();
            let b = Var::from_tensor(&tensor(small_integers(k, 12), &[k])).unwrap();
            let weights_out = tensor(small_integers(n * k * 4 * 4, 13), &[n, k, 4, 4]);

            let ours = conv1x1(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), &cfg).unwrap();
            let ours = (ours * &weights_out).unwrap().sum_all().unwrap().backward().unwrap();

            let z = x
                .as_tensor()
                .conv2d(w.as_tensor(), cfg.padding, cfg.stride, 1, cfg.groups)
                .unwrap()
                .broadcast_add(&b.as_tensor().reshape((1, k, 1, 1)).unwrap())
                .unwrap();
            let y = match activation {
                Activation::Identity => z,
                Activation::Relu => z.relu().unwrap(),
                Activation::Silu => z.silu().unwrap(),
                _ => (&z
                    * z.affine(1.0, 3.0)
                        .unwrap()
                        .clamp(0f32, 6f32)
                        .unwrap()
                        .affine(1.0 / 6.0, 0.0)
                        .unwrap())
                .unwrap(),
            };
            let theirs = (y * &weights_out).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, var) in [("x", &x), ("w", &w), ("b", &b)] {
                let g_ours = values(ours.get(var.as_tensor()).unwrap());
                let g_theirs = values(theirs.get(var.as_tensor()).unwrap());
                assert_eq!(g_ours, g_theirs, "d{name} with {activation:?}");
            }
        }
    }

    #[test]
    fn gradients_without_bias_with_two_dimensional_weights_and_through_the_module() {
        let (c, k, n, h, wd) = (6, 4, 1, 3, 4);
        let cfg = Conv1x1Config::default().with_activation(Activation::Tanh);
        let x = Var::from_tensor(&tensor(small_integers(n * c * h * wd, 20), &[n, c, h, wd])).unwrap();
        let w2 = Var::from_tensor(&tensor(small_integers(k * c, 21), &[k, c])).unwrap();
        let ours = conv1x1(x.as_tensor(), w2.as_tensor(), None, &cfg).unwrap();
        let ours = ours.sum_all().unwrap().backward().unwrap();
        let w4 = w2.as_tensor().reshape((k, c, 1, 1)).unwrap();
        let theirs = x.as_tensor().conv2d(&w4, 0, 1, 1, 1).unwrap().tanh().unwrap();
        let theirs = theirs.sum_all().unwrap().backward().unwrap();
        assert_eq!(
            values(ours.get(x.as_tensor()).unwrap()),
            values(theirs.get(x.as_tensor()).unwrap())
        );
        let dw = ours.get(w2.as_tensor()).unwrap();
        assert_eq!(dw.dims(), &[k, c]);
        assert_eq!(values(dw), values(theirs.get(w2.as_tensor()).unwrap()));

        // The module: gradients reach its weight and bias tensors.
        let w = Var::from_tensor(&tensor(small_integers(k * c, 22), &[k, c, 1, 1])).unwrap();
        let b = Var::from_tensor(&tensor(small_integers(k, 23), &[k])).unwrap();
        let module = PointwiseConv2d::new(w.as_tensor().clone(), Some(b.as_tensor().clone()), cfg).unwrap();
        let grads = module
            .forward(x.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let via_op = conv1x1(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), &cfg).unwrap();
        let via_op = via_op.sum_all().unwrap().backward().unwrap();
        for var in [&x, &w, &b] {
            assert_eq!(
                values(grads.get(var.as_tensor()).unwrap()),
                values(via_op.get(var.as_tensor()).unwrap())
            );
        }
    }

    #[test]
    fn a_narrowed_input_reads_from_its_offset() {
        let (c, k) = (4, 3);
        let w = tensor(small_integers(k * c, 30), &[k, c, 1, 1]);
        let batch = tensor(small_integers(3 * c * 5 * 5, 31), &[3, c, 5, 5]);
        let second = batch.narrow(0, 1, 1).unwrap(); // contiguous, start offset c*25
        let cfg = Conv1x1Config::default();
        let ours = conv1x1(&second, &w, None, &cfg).unwrap();
        let copy = conv1x1(&second.copy().unwrap(), &w, None, &cfg).unwrap();
        assert_eq!(values(&ours), values(&copy));
        assert_eq!(values(&ours), values(&second.conv2d(&w, 0, 1, 1, 1).unwrap()));
    }

    #[test]
    fn wrong_inputs_are_candle_errors() {
        let cfg = Conv1x1Config::default();
        let x = Tensor::ones((1, 4, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::ones((2, 4, 1, 1), DType::F32, &Device::Cpu).unwrap();
        let e = conv1x1(
            &x.to_dtype(DType::F64).unwrap(),
            &w.to_dtype(DType::F64).unwrap(),
            None,
            &cfg,
        )
        .unwrap_err();
        assert!(e.to_string().contains("f32 or bf16 tensors only"), "{e}");
        let e = conv1x1(
            &x,
            &Tensor::ones((2, 4, 3, 3), DType::F32, &Device::Cpu).unwrap(),
            None,
            &cfg,
        )
        .unwrap_err();
        assert!(e.to_string().contains("[K, C/G, 1, 1]"), "{e}");
        let e = conv1x1(
            &x,
            &Tensor::ones((2, 3, 1, 1), DType::F32, &Device::Cpu).unwrap(),
            None,
            &cfg,
        )
        .unwrap_err();
        assert!(e.to_string().contains("do not fit 4 input channels"), "{e}");
        let e = conv1x1(&x, &w, None, &cfg.with_groups(3)).unwrap_err();
        assert!(e.to_string().contains("do not fit"), "{e}");
        let e = conv1x1(&x, &w, None, &cfg.with_activation(Activation::Prelu)).unwrap_err();
        assert!(e.to_string().contains("PReLU"), "{e}");
        let e = conv1x1(&x, &w, Some(&Tensor::ones(3, DType::F32, &Device::Cpu).unwrap()), &cfg).unwrap_err();
        assert!(e.to_string().contains("bias"), "{e}");
        let e = conv1x1(
            &x,
            &w,
            Some(&Tensor::ones((1, 2, 1, 1), DType::F32, &Device::Cpu).unwrap()),
            &cfg,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bias must be [2]"), "{e}");
        let e = conv1x1(&x, &w, None, &cfg.with_stride(0)).unwrap_err();
        assert!(e.to_string().contains("stride"), "{e}");
    }
}
