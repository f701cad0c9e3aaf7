//! [`Plan::forward`] on `ndarray` views (feature `ndarray`), without copying.
//!
//! # Axis order and memory order
//! A view in standard (row-major) order is read in the plan layout's axis order: `[N, C, H, W]`
//! for [`Layout::Nchw`], `[N, H, W, C]` for [`Layout::Nhwc`]. An NHWC plan also takes views in
//! PyTorch's logical order `[N, C, H, W]` whose memory is channels-last (the view
//! `a.permuted_axes([0, 3, 1, 2])` of a standard `[N, H, W, C]` array `a`): that is the plan's
//! memory order under other axis names, so it is read in place too. Axes of extent 1 may have
//! any stride.
//!
//! Anything else (a negative stride, gaps between elements, broadcast axes, an axis order the
//! plan cannot read in place) is an [`Error::ArrayView`] naming the operand and the problem;
//! the adapter never copies behind the caller's back. Make such a view standard first
//! (`view.as_standard_layout()`) or build the plan for the layout the data has.
//!
//! ```
//! use ndarray::Array4;
//! use pointwise::{interop::ndarray::forward, Conv1x1, Plan, PlanOptions, Workspace};
//! let plan = Plan::new(&Conv1x1::new(3, 2), &[1.0; 6], None, PlanOptions::default()).unwrap();
//! let x = Array4::<f32>::ones((1, 3, 4, 4)); // [N, C, H, W]
//! let mut y = Array4::<f32>::zeros((1, 2, 4, 4));
//! forward(&plan, x.view(), None, y.view_mut(), &mut Workspace::new()).unwrap();
//! assert!(y.iter().all(|&v| v == 3.0));
//! ```
use ::ndarray::{ArrayBase, ArrayView4, ArrayViewMut4, Data, Ix4};

use crate::{Error, InputDims, Layout, Plan, Workspace};

/// `output = act(W * input + bias [+ residual])` on `ndarray` views: [`Plan::forward`] reading
/// and writing the views' memory in place.
///
/// # Shapes
/// `input`: `[N, C, H, W]` (NCHW plan) or `[N, H, W, C]` (NHWC plan), or `[N, C, H, W]` with
/// channels-last memory for an NHWC plan (see the [module docs](self)); `residual` and
/// `output`: the same for the output dims `(N, K, Ho, Wo)` of [`Plan::output_dims`].
///
/// # Errors
/// [`Error::ArrayView`] for a view of the wrong shape or memory order; otherwise as
/// [`Plan::forward`]. On error `output` is untouched.
pub fn forward(
    plan: &Plan,
    input: ArrayView4<'_, f32>,
    residual: Option<ArrayView4<'_, f32>>,
    mut output: ArrayViewMut4<'_, f32>,
    workspace: &mut Workspace,
) -> Result<(), Error> {
    let (dims, out_dims) = matching_dims(plan, &input, &output)?;
    let residual = match &residual {
        Some(r) => {
            let layout = plan.conv().layout;
            if !readings(r, "residual", layout)?.contains(&out_dims) {
                return Err(shape_error("residual", r.shape(), layout, out_dims));
            }
            Some(memory_slice(r))
        }
        None => None,
    };
    plan.forward(
        memory_slice(&input),
        dims,
        residual,
        memory_slice_mut(&mut output),
        workspace,
    )
}

/// `output = act(W * input + bias + output)` on `ndarray` views: [`Plan::forward_residual_in_place`],
/// with `output` holding the residual on entry.
///
/// # Shapes
/// As [`forward`].
///
/// # Errors
/// As [`forward`]; on error `output` is untouched.
pub fn forward_residual_in_place(
    plan: &Plan,
    input: ArrayView4<'_, f32>,
    mut output: ArrayViewMut4<'_, f32>,
    workspace: &mut Workspace,
) -> Result<(), Error> {
    let (dims, _) = matching_dims(plan, &input, &output)?;
    plan.forward_residual_in_place(memory_slice(&input), dims, memory_slice_mut(&mut output), workspace)
}

/// `(n, channels, h, w)`.
type NamedDims = [usize; 4];

/// How a view's axes map onto the plan's memory order, outermost first: `[0, 1, 2, 3]` when
/// the axes are already in memory order, `[0, 2, 3, 1]` for logical NCHW over NHWC memory.
type AxisOrder = [usize; 4];
const AXES_IN_MEMORY_ORDER: AxisOrder = [0, 1, 2, 3];
const NCHW_AXES_OVER_NHWC_MEMORY: AxisOrder = [0, 2, 3, 1];

/// The input's dims and the output's, from a reading of each view that fits the plan: the
/// input's channel count is `C` and the output's dims are what the plan gives for it. (Axes of
/// extent 1 can make a view readable two ways; the pair that fits wins.)
fn matching_dims<S, T>(
    plan: &Plan,
    input: &ArrayBase<S, Ix4>,
    output: &ArrayBase<T, Ix4>,
) -> Result<(InputDims, NamedDims), Error>
where
    S: Data<Elem = f32>,
    T: Data<Elem = f32>,
{
    let conv = plan.conv();
    let inputs: Vec<NamedDims> = readings(input, "input", conv.layout)?
        .into_iter()
        .filter(|d| d[1] == conv.in_channels)
        .collect();
    let Some(&first) = inputs.first() else {
        return Err(Error::ArrayView {
            what: "input",
            problem: match readings(input, "input", conv.layout)?.first() {
                Some(d) => format!("has {} channels, the plan expects {}", d[1], conv.in_channels),
                None => not_dense(input.shape(), input.strides(), conv.layout),
            },
        });
    };
    let outputs = readings(output, "output", conv.layout)?;
    for [n, _, h, w] in inputs {
        let dims = InputDims::new(n, h, w);
        let out = plan.output_dims(dims)?;
        let want = [out.n, out.k, out.h, out.w];
        if outputs.contains(&want) {
            return Ok((dims, want));
        }
    }
    let out = plan.output_dims(InputDims::new(first[0], first[2], first[3]))?;
    Err(shape_error(
        "output",
        output.shape(),
        conv.layout,
        [out.n, out.k, out.h, out.w],
    ))
}

/// Every way to read `view` in place as `layout`, as `(n, channels, h, w)`.
fn readings<S: Data<Elem = f32>>(
    view: &ArrayBase<S, Ix4>,
    what: &'static str,
    layout: Layout,
) -> Result<Vec<NamedDims>, Error> {
    let shape = view.shape();
    let strides = view.strides();
    if let Some(axis) = (0..4).find(|&a| shape[a] > 1 && strides[a] < 0) {
        return Err(Error::ArrayView {
            what,
            problem: format!(
                "negative stride {} on axis {axis}; reverse it into a standard copy first",
                strides[axis]
            ),
        });
    }
    let orders: &[AxisOrder] = match layout {
        Layout::Nchw => &[AXES_IN_MEMORY_ORDER],
        Layout::Nhwc => &[AXES_IN_MEMORY_ORDER, NCHW_AXES_OVER_NHWC_MEMORY],
    };
    Ok(orders
        .iter()
        .filter_map(|&order| dense_in_order(shape, strides, layout, order))
        .collect())
}

/// The view's dims as `(n, channels, h, w)` read in `order`, or `None` when its strides are not
/// dense in that order. Axes of extent 1 (and every axis of an empty view) may have any stride.
fn dense_in_order(shape: &[usize], strides: &[isize], layout: Layout, order: AxisOrder) -> Option<NamedDims> {
    if !shape.contains(&0) {
        let mut expected: isize = 1;
        for &axis in order.iter().rev() {
            if shape[axis] > 1 && strides[axis] != expected {
                return None;
            }
            expected = expected.checked_mul(isize::try_from(shape[axis]).ok()?)?;
        }
    }
    let m = order.map(|axis| shape[axis]);
    Some(match layout {
        Layout::Nchw => m,
        Layout::Nhwc => [m[0], m[3], m[1], m[2]],
    })
}

fn axis_names(layout: Layout) -> &'static str {
    match layout {
        Layout::Nchw => "[N, C, H, W] in standard order",
        Layout::Nhwc => "[N, H, W, C] in standard order, or [N, C, H, W] with channels-last memory",
    }
}

fn not_dense(shape: &[usize], strides: &[isize], layout: Layout) -> String {
    format!(
        "shape {shape:?} with strides {strides:?} is not dense in the plan's {layout:?} memory order \
         (expected {}); make a standard copy first",
        axis_names(layout)
    )
}

fn shape_error(what: &'static str, shape: &[usize], layout: Layout, want: NamedDims) -> Error {
    Error::ArrayView {
        what,
        problem: format!(
            "shape {shape:?} cannot be read as (n, channels, h, w) = {want:?}, the plan's output for this input \
             (as {}, dense)",
            axis_names(layout)
        ),
    }
}

/// The elements of a view that [`readings`] found dense, in memory order.
fn memory_slice<'a>(view: &'a ArrayView4<'_, f32>) -> &'a [f32] {
    if view.is_empty() {
        return &[];
    }
    // A dense view with non-negative strides (on every axis longer than 1) is contiguous.
    view.as_slice_memory_order().unwrap_or(&[])
}

fn memory_slice_mut<'a>(view: &'a mut ArrayViewMut4<'_, f32>) -> &'a mut [f32] {
    if view.is_empty() {
        return &mut [];
    }
    view.as_slice_memory_order_mut().unwrap_or(&mut [])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Conv1x1, PlanOptions};
    use ::ndarray::{s, Array4};

    fn plan(layout: Layout) -> Plan {
        let conv = Conv1x1::new(3, 2).with_layout(layout);
        let w: Vec<f32> = (0..6).map(|i| i as f32 - 2.0).collect();
        Plan::new(&conv, &w, Some(&[0.5, -1.0]), PlanOptions::default()).unwrap()
    }

    fn plain(plan: &Plan, x: &[f32], dims: InputDims) -> Vec<f32> {
        let mut y = vec![0.0; plan.output_len(dims).unwrap()];
        plan.forward(x, dims, None, &mut y, &mut Workspace::new()).unwrap();
        y
    }

    #[test]
    fn channels_last_memory_under_nchw_axes_is_read_in_place() {
        let plan = plan(Layout::Nhwc);
        let nhwc = Array4::from_shape_fn((2, 3, 5, 3), |(n, h, w, c)| (n * 45 + h * 15 + w * 3 + c) as f32);
        let mut y = Array4::<f32>::zeros((2, 3, 5, 2));
        let nchw_view = nhwc.view().permuted_axes([0, 3, 1, 2]);
        let y_view = y.view_mut().permuted_axes([0, 3, 1, 2]);
        forward(&plan, nchw_view, None, y_view, &mut Workspace::new()).unwrap();
        let want = plain(&plan, nhwc.as_slice().unwrap(), InputDims::new(2, 3, 5));
        assert_eq!(y.as_slice().unwrap(), &want[..]);
    }

    #[test]
    fn negative_strides_and_gaps_are_named_and_leave_the_output_alone() {
        let plan = plan(Layout::Nchw);
        let x = Array4::<f32>::ones((1, 3, 4, 4));
        let mut y = Array4::<f32>::from_elem((1, 2, 4, 4), 7.0);
        let flipped = x.slice(s![.., .., ..;-1, ..]);
        let e = forward(&plan, flipped, None, y.view_mut(), &mut Workspace::new()).unwrap_err();
        assert!(matches!(&e, Error::ArrayView { what: "input", problem } if problem.contains("negative stride")));
        let big = Array4::<f32>::ones((1, 3, 4, 8));
        let gappy = big.slice(s![.., .., .., ..;2]);
        let e = forward(&plan, gappy, None, y.view_mut(), &mut Workspace::new()).unwrap_err();
        assert!(matches!(&e, Error::ArrayView { what: "input", problem } if problem.contains("not dense")));
        let wrong_c = Array4::<f32>::ones((1, 4, 4, 4));
        let e = forward(&plan, wrong_c.view(), None, y.view_mut(), &mut Workspace::new()).unwrap_err();
        assert!(matches!(&e, Error::ArrayView { what: "input", problem } if problem.contains("has 4 channels")));
        let mut small = Array4::<f32>::zeros((1, 2, 4, 3));
        let e = forward(&plan, x.view(), None, small.view_mut(), &mut Workspace::new()).unwrap_err();
        assert!(matches!(&e, Error::ArrayView { what: "output", .. }));
        assert!(y.iter().all(|&v| v == 7.0));
    }

    #[test]
    fn empty_sliced_batches_are_no_ops() {
        let plan = plan(Layout::Nchw);
        let x = Array4::<f32>::ones((2, 3, 4, 4));
        let mut y = Array4::<f32>::zeros((2, 2, 4, 4));
        let empty_x = x.slice(s![0..0, .., .., ..]);
        let empty_y = y.slice_mut(s![0..0, .., .., ..]);
        forward(&plan, empty_x, None, empty_y, &mut Workspace::new()).unwrap();
    }

    #[test]
    fn extent_one_axes_pick_the_reading_that_fits_input_and_output() {
        // NHWC plan, K = 1, Wo = 1: [N, C, H, W] views over channels-last memory, where the
        // standard reading of the output view would be a different shape.
        let conv = Conv1x1::new(3, 1).with_layout(Layout::Nhwc);
        let plan = Plan::new(&conv, &[1.0, -2.0, 0.5], None, PlanOptions::default()).unwrap();
        let nhwc = Array4::from_shape_fn((1, 4, 1, 3), |(_, h, _, c)| (h * 3 + c) as f32);
        let mut y = Array4::<f32>::zeros((1, 4, 1, 1));
        let y_view = y.view_mut().permuted_axes([0, 3, 1, 2]);
        forward(
            &plan,
            nhwc.view().permuted_axes([0, 3, 1, 2]),
            None,
            y_view,
            &mut Workspace::new(),
        )
        .unwrap();
        let want = plain(&plan, nhwc.as_slice().unwrap(), InputDims::new(1, 4, 1));
        assert_eq!(y.as_slice().unwrap(), &want[..]);
        // A negative stride on an axis of extent 1 reads nothing twice: accepted.
        let mut flipped = Array4::<f32>::zeros((1, 4, 1, 1));
        let mut flipped_view = flipped.view_mut();
        flipped_view.invert_axis(::ndarray::Axis(2));
        forward(&plan, nhwc.view(), None, flipped_view, &mut Workspace::new()).unwrap();
        assert_eq!(flipped.as_slice().unwrap(), &want[..]);
    }
}
