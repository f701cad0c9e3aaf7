//! The reference kernel: plain loops straight from the definition, no packing, no SIMD,
//! single-threaded. It is in the kernel list so any kernel can be checked against it at run
//! time (the compare tool does; tests use their own f64 reference), and Auto runs the same
//! loop for small problems, where packing and tiling would cost more than the arithmetic.
use crate::conv::Geometry;
use crate::epilogue::{Activation, Residual, ScalarEpilogue};

/// Evaluates `$call` with `$ep` (a [`ScalarEpilogue`] binding) rebound so that the common
/// activations are constants in it: one instantiation each, so the per-element work inlines
/// without a branch on the activation.
macro_rules! with_common_activation {
    ($ep:ident => $call:expr) => {
        match $ep.act {
            Activation::Identity => {
                let $ep = ScalarEpilogue {
                    act: Activation::Identity,
                    ..$ep
                };
                $call
            }
            Activation::Relu => {
                let $ep = ScalarEpilogue {
                    act: Activation::Relu,
                    ..$ep
                };
                $call
            }
            _ => $call,
        }
    };
}

/// `y = act(W x + bias + r)` for every output element, accumulating in input-channel order.
/// Outputs over padded pixels are the epilogue of a zero sum (the weights are not read).
/// One input channel per group takes [`forward_channelwise`].
pub(crate) fn forward(
    geom: &Geometry,
    x: &[f32],
    weights: &[f32],
    ep: ScalarEpilogue,
    residual: Residual,
    y: &mut [f32],
) {
    if geom.cg == 1 {
        with_common_activation!(ep => forward_channelwise(geom, x, weights, ep, residual, y))
    } else if geom.groups == 1 && geom.is_dense() {
        with_common_activation!(ep => forward_dense(geom, x, weights, ep, residual, y))
    } else {
        with_common_activation!(ep => forward_with(geom, x, weights, ep, residual, y))
    }
}

#[inline(always)]
fn forward_with(geom: &Geometry, x: &[f32], weights: &[f32], ep: ScalarEpilogue, residual: Residual, y: &mut [f32]) {
    let ics = geom.input_channel_stride();
    let ocs = geom.output_channel_stride();
    let ho = geom.p / geom.wo;
    for img in 0..geom.n {
        for oy in 0..ho {
            for ox in 0..geom.wo {
                let src = geom.input_offset(img, oy, ox);
                let dst = geom.output_offset(img, oy * geom.wo + ox);
                for (k, w) in weights.chunks_exact(geom.cg).enumerate() {
                    let g = if geom.groups == 1 { 0 } else { k / geom.kg };
                    let mut acc = 0.0f32;
                    if let Some(src) = src {
                        let base = src + g * geom.cg * ics;
                        // The last input read is in bounds for a validated geometry; slicing
                        // once here lets the loop run without per-element checks.
                        let xs = &x[base..=base + (geom.cg - 1) * ics];
                        for (c, &wv) in w.iter().enumerate() {
                            acc += wv * xs[c * ics];
                        }
                    }
                    let at = dst + k * ocs;
                    y[at] = ep.finish(acc, k, residual.at(at, y));
                }
            }
        }
    }
}

/// [`forward_with`] for one group, stride 1 and no padding (the seed example, and most small
/// problems Auto sends here): the same sums in the same order, with the pixel map and the
/// channel's epilogue out of the inner loops.
#[inline(always)]
fn forward_dense(geom: &Geometry, x: &[f32], weights: &[f32], ep: ScalarEpilogue, residual: Residual, y: &mut [f32]) {
    let (c, k, p) = (geom.c, geom.k, geom.p);
    for (img, xi) in x.chunks_exact(c * p).enumerate().take(geom.n) {
        let out0 = img * k * p;
        match geom.layout {
            crate::conv::Layout::Nchw => {
                for (ko, w) in weights.chunks_exact(c).enumerate() {
                    let channel = ep.channel(ko);
                    for q in 0..p {
                        let mut acc = 0.0f32;
                        for (ci, &wv) in w.iter().enumerate() {
                            acc += wv * xi[ci * p + q];
                        }
                        let at = out0 + ko * p + q;
                        y[at] = channel.finish(acc, residual.at(at, y));
                    }
                }
            }
            crate::conv::Layout::Nhwc => {
                for (q, xs) in xi.chunks_exact(c).enumerate() {
                    for (ko, w) in weights.chunks_exact(c).enumerate() {
                        let mut acc = 0.0f32;
                        for (&wv, &xv) in w.iter().zip(xs) {
                            acc += wv * xv;
                        }
                        let at = out0 + q * k + ko;
                        y[at] = ep.finish(acc, ko, residual.at(at, y));
                    }
                }
            }
        }
    }
}

/// One input channel per group (`C/G = 1`: channel-wise scaling, frozen batch norms exported
/// as a grouped 1x1 convolution, depthwise channel multipliers): each output element is one
/// product, `y = epilogue(0 + w[k] * x[k / (K/G)])`, the same bits as the general loop, run
/// as a stream over the output at memory speed. Auto sends every such call here, whatever
/// its size: a register tile would compute one useful row of eight or more.
#[inline(always)]
fn forward_channelwise(
    geom: &Geometry,
    x: &[f32],
    weights: &[f32],
    ep: ScalarEpilogue,
    residual: Residual,
    y: &mut [f32],
) {
    let ics = geom.input_channel_stride();
    let ho = geom.p / geom.wo;
    // The input pixel (`iy * W + ix`) feeding output (oy, ox), or None for padding.
    let input_row = |oy: usize| (oy * geom.sh).checked_sub(geom.pad_top).filter(|&iy| iy < geom.h);
    let input_col = |ox: usize| (ox * geom.sw).checked_sub(geom.pad_left).filter(|&ix| ix < geom.w);
    let plane = geom.h * geom.w;
    let dense = geom.p == plane && geom.sh == 1 && geom.sw == 1;
    match geom.layout {
        crate::conv::Layout::Nchw => {
            // Channel by channel: each output plane is written in order.
            for img in 0..geom.n {
                for k in 0..geom.k {
                    let channel = ep.channel(k);
                    let wk = weights[k];
                    let xs = &x[(img * geom.c + k / geom.kg) * plane..][..plane];
                    let out = geom.output_offset(img, 0) + k * geom.p;
                    if dense {
                        // Stride 1, no padding: the output plane is the input plane, scaled.
                        let ys = &mut y[out..][..plane];
                        match residual {
                            Residual::None => {
                                for (o, &v) in ys.iter_mut().zip(xs) {
                                    *o = channel.finish(0.0 + wk * v, None);
                                }
                            }
                            Residual::Separate(r) => {
                                for ((o, &v), &r) in ys.iter_mut().zip(xs).zip(&r[out..][..plane]) {
                                    *o = channel.finish(0.0 + wk * v, Some(r));
                                }
                            }
                            Residual::InOutput => {
                                for (o, &v) in ys.iter_mut().zip(xs) {
                                    *o = channel.finish(0.0 + wk * v, Some(*o));
                                }
                            }
                        }
                        continue;
                    }
                    for oy in 0..ho {
                        let iy = input_row(oy);
                        for ox in 0..geom.wo {
                            let at = out + oy * geom.wo + ox;
                            let acc = match (iy, input_col(ox)) {
                                (Some(iy), Some(ix)) => 0.0 + wk * xs[iy * geom.w + ix],
                                _ => 0.0,
                            };
                            y[at] = channel.finish(acc, residual.at(at, y));
                        }
                    }
                }
            }
        }
        crate::conv::Layout::Nhwc => {
            // Pixel by pixel: each pixel's channels are contiguous in input and output.
            for img in 0..geom.n {
                for oy in 0..ho {
                    let iy = input_row(oy);
                    for ox in 0..geom.wo {
                        let src = match (iy, input_col(ox)) {
                            (Some(iy), Some(ix)) => Some(&x[(img * plane + iy * geom.w + ix) * geom.c..][..geom.c]),
                            _ => None,
                        };
                        let dst = geom.output_offset(img, oy * geom.wo + ox);
                        if geom.kg == 1 {
                            // One output channel per input channel: the pixel's row, scaled.
                            let ys = &mut y[dst..][..geom.k];
                            match src {
                                Some(xs) => scale_row(ys, xs, weights, &ep, residual, dst),
                                None => {
                                    for k in 0..geom.k {
                                        let r = residual.at(dst + k, y);
                                        y[dst + k] = ep.finish(0.0, k, r);
                                    }
                                }
                            }
                            continue;
                        }
                        for (g, group_weights) in weights.chunks_exact(geom.kg).enumerate() {
                            let xv = src.map(|xs| xs[g * ics]);
                            for (m, &wk) in group_weights.iter().enumerate() {
                                let k = g * geom.kg + m;
                                let at = dst + k;
                                let acc = match xv {
                                    Some(xv) => 0.0 + wk * xv,
                                    None => 0.0,
                                };
                                y[at] = ep.finish(acc, k, residual.at(at, y));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One NHWC pixel with one output channel per input channel (`K = C = G`), whose outputs are
/// `ys` (`at` in the output): `act(0 + w[k] * xs[k] + bias[k] + r[k])`, the epilogue's
/// operations in its order, as passes over the row that the compiler vectorizes: the sums
/// (one loop per bias and residual combination), then the activation.
// `z + *o`, not `*o += z`: the residual is the second operand, as in every other path (with
// two NaN operands the first one's payload is returned).
#[allow(clippy::assign_op_pattern)]
#[inline(always)]
fn scale_row(ys: &mut [f32], xs: &[f32], weights: &[f32], ep: &ScalarEpilogue, residual: Residual, at: usize) {
    let n = ys.len();
    let (xs, weights) = (&xs[..n], &weights[..n]);
    let products = xs.iter().zip(weights).map(|(&v, &wk)| 0.0 + wk * v);
    match (ep.bias.map(|b| &b[..n]), residual) {
        (None, Residual::None) => ys.iter_mut().zip(products).for_each(|(o, z)| *o = z),
        (Some(b), Residual::None) => ys.iter_mut().zip(products.zip(b)).for_each(|(o, (z, &b))| *o = z + b),
        (None, Residual::Separate(r)) => {
            let r = &r[at..][..n];
            ys.iter_mut().zip(products.zip(r)).for_each(|(o, (z, &r))| *o = z + r)
        }
        (Some(b), Residual::Separate(r)) => {
            let r = &r[at..][..n];
            ys.iter_mut()
                .zip(products.zip(b).zip(r))
                .for_each(|(o, ((z, &b), &r))| *o = z + b + r)
        }
        (None, Residual::InOutput) => ys.iter_mut().zip(products).for_each(|(o, z)| *o = z + *o),
        (Some(b), Residual::InOutput) => ys
            .iter_mut()
            .zip(products.zip(b))
            .for_each(|(o, (z, &b))| *o = z + b + *o),
    }
    if ep.act != Activation::Identity {
        match ep.slope {
            Some(slope) => ys
                .iter_mut()
                .zip(&slope[..n])
                .for_each(|(o, &s)| *o = ep.act.apply(*o, s)),
            None => ys.iter_mut().for_each(|o| *o = ep.act.apply(*o, 0.0)),
        }
    }
}
