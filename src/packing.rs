//! Packing: the only place that knows about stride and padding.
//!
//! Both operands of the microkernel are stored as *lane panels*: `rows` consecutive groups of
//! `lanes` values, where a row is one reduction step (one input channel) and a lane is one
//! output channel (weights) or one output pixel (activations). Lanes past the end are zero.
//!
//! - Weights are packed once, at plan time, by [`pack_weight_panels`].
//! - Activations are gathered per call by [`pack_pixel_panels`]: output pixel `j` reads the
//!   input pixel that stride and padding map it to (`Geometry::input_pixel_offset`), or zero
//!   when it falls in the padding. This is the strided gather; there is no separate im2col.
use crate::conv::Geometry;
use aligned_vec::{AVec, ConstAlign};

/// Cache-line aligned f32 storage for packed panels.
pub(crate) type PanelBuf = AVec<f32, ConstAlign<64>>;

/// A padded pixel in an offset list.
pub(crate) const PADDED: isize = -1;

/// Weights of every group packed into `lanes`-wide panels over output channels.
#[derive(Clone)]
pub(crate) struct WeightPanels {
    pub data: PanelBuf,
    pub lanes: usize,
    /// Panels per group, `ceil(kg / lanes)`.
    pub panels: usize,
    /// Rows per panel (the reduction length `C / groups`).
    pub cg: usize,
}

impl WeightPanels {
    /// Start of panel `panel` of group `g`.
    #[inline]
    pub fn panel_ptr(&self, g: usize, panel: usize) -> *const f32 {
        // The index is inside `data` for g < groups and panel < panels (see pack_weight_panels).
        self.data[(g * self.panels + panel) * self.cg * self.lanes..].as_ptr()
    }
}

/// Packs `weights` (`[groups * kg, cg]` row-major) into panels of `lanes` output channels:
/// element `(g, panel, c, lane)` is `W[g*kg + panel*lanes + lane][c]`, zero past `kg`.
/// The caller has checked `weights.len() == groups * kg * cg` and that the packed size fits.
pub(crate) fn pack_weight_panels(weights: &[f32], groups: usize, kg: usize, cg: usize, lanes: usize) -> WeightPanels {
    let panels = kg.div_ceil(lanes);
    let total = groups * panels * cg * lanes;
    let mut data = PanelBuf::from_iter(64, std::iter::repeat_n(0.0f32, total));
    for g in 0..groups {
        for panel in 0..panels {
            let dst = &mut data[(g * panels + panel) * cg * lanes..][..cg * lanes];
            for lane in 0..lanes.min(kg - panel * lanes) {
                let k = g * kg + panel * lanes + lane;
                let src = &weights[k * cg..(k + 1) * cg];
                for (c, &w) in src.iter().enumerate() {
                    dst[c * lanes + lane] = w;
                }
            }
        }
    }
    WeightPanels {
        data,
        lanes,
        panels,
        cg,
    }
}

/// Fills `offsets[i]` with the input offset of folded output pixel `j0 + i` (or [`PADDED`]).
pub(crate) fn pixel_offsets(geom: &Geometry, j0: usize, offsets: &mut [isize]) {
    for (i, o) in offsets.iter_mut().enumerate() {
        *o = match geom.input_pixel_offset(j0 + i) {
            Some(off) => off as isize,
            None => PADDED,
        };
    }
}

/// The common spacing `d` of a full panel of `lanes` pixels at `offs[0] + r * d`, none of
/// them padded; `None` otherwise. Such a panel can be read in place instead of packed.
#[inline(always)]
pub(crate) fn uniform_spacing(offs: &[isize], lanes: usize) -> Option<usize> {
    if offs.len() != lanes || offs[0] == PADDED {
        return None;
    }
    let d = if lanes > 1 { offs[1] - offs[0] } else { 0 };
    if d < 0 {
        return None;
    }
    offs.iter()
        .enumerate()
        .all(|(r, &o)| o != PADDED && o == offs[0] + r as isize * d)
        .then_some(d as usize)
}

/// Gathers the input pixels listed in `offsets` into `lanes`-wide panels of `cg` rows:
/// element `(panel, c, lane)` is `x[offsets[panel*lanes + lane] + (c0 + c) * ics]`, zero for
/// padded pixels and for lanes past `offsets.len()`. `ics` is the input's channel stride
/// (`H*W` in NCHW, 1 in NHWC) and `c0` the group's first channel.
/// `out` must hold `ceil(offsets.len() / lanes) * cg * lanes` values.
#[inline(always)]
pub(crate) fn pack_pixel_panels(
    x: &[f32],
    offsets: &[isize],
    c0: usize,
    cg: usize,
    ics: usize,
    lanes: usize,
    out: &mut [f32],
) {
    for (panel, offs) in offsets.chunks(lanes).enumerate() {
        let dst = &mut out[panel * cg * lanes..(panel + 1) * cg * lanes];
        if ics == 1 {
            pack_channel_contiguous(x, offs, c0, cg, lanes, dst);
        } else {
            pack_pixel_contiguous(x, offs, c0, cg, ics, lanes, dst);
        }
    }
}

/// NHWC: each pixel's `cg` channels are contiguous; transpose them into the panel.
#[inline(always)]
fn pack_channel_contiguous(x: &[f32], offs: &[isize], c0: usize, cg: usize, lanes: usize, dst: &mut [f32]) {
    if offs.len() < lanes {
        dst.fill(0.0);
    }
    for (lane, &off) in offs.iter().enumerate() {
        if off == PADDED {
            for c in 0..cg {
                dst[c * lanes + lane] = 0.0;
            }
        } else {
            let src = &x[off as usize + c0..off as usize + c0 + cg];
            for (c, &v) in src.iter().enumerate() {
                dst[c * lanes + lane] = v;
            }
        }
    }
}

/// NCHW: each channel is a plane; copy runs of consecutive pixels row by row.
#[inline(always)]
fn pack_pixel_contiguous(x: &[f32], offs: &[isize], c0: usize, cg: usize, ics: usize, lanes: usize, dst: &mut [f32]) {
    if let Some(d) = uniform_spacing(offs, lanes) {
        let first = offs[0] as usize;
        // d is 0 for a one-lane panel: a copy of one value per row.
        if d <= 1 {
            // Stride 1 and no padding across the panel: straight row copies.
            for c in 0..cg {
                let src = first + (c0 + c) * ics;
                dst[c * lanes..(c + 1) * lanes].copy_from_slice(&x[src..src + lanes]);
            }
        } else {
            // A strided row of one output line (stride d, no padding): a strided copy per
            // channel, with one bounds check per row.
            for c in 0..cg {
                let src = first + (c0 + c) * ics;
                let run = &x[src..=src + (lanes - 1) * d];
                for (v, &xv) in dst[c * lanes..(c + 1) * lanes].iter_mut().zip(run.iter().step_by(d)) {
                    *v = xv;
                }
            }
        }
        return;
    }
    for c in 0..cg {
        let row = &mut dst[c * lanes..(c + 1) * lanes];
        let base = (c0 + c) * ics;
        for (lane, v) in row.iter_mut().enumerate() {
            *v = match offs.get(lane) {
                Some(&o) if o != PADDED => x[o as usize + base],
                _ => 0.0,
            };
        }
    }
}
