//! The reference kernel: plain loops straight from the definition, no packing, no SIMD,
//! single-threaded. It is in the kernel list so any kernel can be checked against it at run
//! time (the compare tool does); tests use their own f64 reference.
use crate::conv::Geometry;
use crate::epilogue::Activation;

/// `y = act(W x + bias + r)` for every output element, accumulating in input-channel order.
pub(crate) fn forward(
    geom: &Geometry,
    x: &[f32],
    weights: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) {
    let ics = geom.input_channel_stride();
    let ocs = geom.output_channel_stride();
    for j in 0..geom.n * geom.p {
        let src = geom.input_pixel_offset(j);
        let dst = geom.output_pixel_offset(j);
        for g in 0..geom.groups {
            for kk in 0..geom.kg {
                let k = g * geom.kg + kk;
                let mut acc = 0.0f32;
                if let Some(src) = src {
                    let w = &weights[k * geom.cg..(k + 1) * geom.cg];
                    for (c, &wv) in w.iter().enumerate() {
                        acc += wv * x[src + (g * geom.cg + c) * ics];
                    }
                }
                let at = dst + k * ocs;
                let mut z = acc;
                if let Some(b) = bias {
                    z += b[k];
                }
                if let Some(r) = residual {
                    z += r[at];
                }
                y[at] = act.apply(z);
            }
        }
    }
}
