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
