//! The reference kernel: plain loops straight from the definition, no packing, no SIMD,
//! single-threaded. It is in the kernel list so any kernel can be checked against it at run
//! time (the compare tool does; tests use their own f64 reference), and Auto runs the same
//! loop for small problems, where packing and tiling would cost more than the arithmetic.
use crate::conv::Geometry;
use crate::epilogue::{Activation, Residual, ScalarEpilogue};

/// `y = act(W x + bias + r)` for every output element, accumulating in input-channel order.
/// Outputs over padded pixels are the epilogue of a zero sum (the weights are not read).
pub(crate) fn forward(
    geom: &Geometry,
    x: &[f32],
    weights: &[f32],
    ep: ScalarEpilogue,
    residual: Residual,
    y: &mut [f32],
) {
    if geom.cg == 1 {
        return forward_channelwise(geom, x, weights, ep, residual, y);
    }
    // One instantiation for the common activations, so the per-element work inlines.
    match ep.act {
        Activation::Identity => forward_with(
            geom,
            x,
            weights,
            ScalarEpilogue {
                act: Activation::Identity,
                ..ep
            },
            residual,
            y,
        ),
        Activation::Relu => forward_with(
            geom,
            x,
            weights,
            ScalarEpilogue {
                act: Activation::Relu,
                ..ep
            },
            residual,
            y,
        ),
        _ => forward_with(geom, x, weights, ep, residual, y),
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
                    let r = match residual {
                        Residual::None => None,
                        Residual::Separate(r) => Some(r[at]),
                        Residual::InOutput => Some(y[at]),
                    };
                    y[at] = ep.finish(acc, k, r);
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
fn forward_channelwise(
    geom: &Geometry,
    x: &[f32],
    weights: &[f32],
    ep: ScalarEpilogue,
    residual: Residual,
    y: &mut [f32],
) {
    let ics = geom.input_channel_stride();
    let ocs = geom.output_channel_stride();
    let ho = geom.p / geom.wo;
    let element =
        |at: usize, k: usize, channel: &crate::epilogue::ChannelEpilogue, src: Option<usize>, y: &mut [f32]| {
            let acc = match src {
                Some(s) => 0.0 + weights[k] * x[s + (k / geom.kg) * ics],
                None => 0.0,
            };
            let r = match residual {
                Residual::None => None,
                Residual::Separate(r) => Some(r[at]),
                Residual::InOutput => Some(y[at]),
            };
            y[at] = channel.finish(acc, r);
        };
    match geom.layout {
        crate::conv::Layout::Nchw => {
            // Channel by channel: each output plane is written in order.
            for img in 0..geom.n {
                for k in 0..geom.k {
                    let channel = ep.channel(k);
                    for oy in 0..ho {
                        for ox in 0..geom.wo {
                            let at = geom.output_offset(img, oy * geom.wo + ox) + k * ocs;
                            element(at, k, &channel, geom.input_offset(img, oy, ox), y);
                        }
                    }
                }
            }
        }
        crate::conv::Layout::Nhwc => {
            // Pixel by pixel: each pixel's channels are contiguous in input and output.
            for img in 0..geom.n {
                for oy in 0..ho {
                    for ox in 0..geom.wo {
                        let src = geom.input_offset(img, oy, ox);
                        let dst = geom.output_offset(img, oy * geom.wo + ox);
                        for k in 0..geom.k {
                            element(dst + k * ocs, k, &ep.channel(k), src, y);
                        }
                    }
                }
            }
        }
    }
}
