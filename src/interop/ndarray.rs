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
use ::ndarray::{ArrayView4, ArrayViewMut4, Dimension};

use crate::{Error, InputDims, Layout, OutputDims, Plan, Workspace};

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
    let (x, dims) = input_slice(plan, &input)?;
    let out_dims = plan.output_dims(dims)?;
    let residual = match &residual {
        Some(r) => Some(output_order_slice(plan.conv().layout, "residual", r, out_dims)?),
        None => None,
    };
    check_output(plan.conv().layout, &output, out_dims)?;
    let y = output_slice_mut(&mut output)?;
    plan.forward(x, dims, residual, y, workspace)
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
    let (x, dims) = input_slice(plan, &input)?;
    let out_dims = plan.output_dims(dims)?;
    check_output(plan.conv().layout, &output, out_dims)?;
    let y = output_slice_mut(&mut output)?;
    plan.forward_residual_in_place(x, dims, y, workspace)
}

/// How a view's axes map onto the plan's memory order, outermost first: `[0, 1, 2, 3]` when
/// the axes are already in memory order, `[0, 2, 3, 1]` for logical NCHW over NHWC memory.
type AxisOrder = [usize; 4];
const AXES_IN_MEMORY_ORDER: AxisOrder = [0, 1, 2, 3];
const NCHW_AXES_OVER_NHWC_MEMORY: AxisOrder = [0, 2, 3, 1];

/// The view's dims as `(n, channels, h, w)` read in `order`, or `None` when its strides are not
/// dense in that order. Axes of extent 1 (and every axis of an empty view) may have any stride.
fn dense_in_order(shape: &[usize], strides: &[isize], layout: Layout, order: AxisOrder) -> Option<[usize; 4]> {
    if shape.contains(&0) {
        return Some(named_dims(shape, layout, order));
    }
    let mut expected: isize = 1;
    for &axis in order.iter().rev() {
        if shape[axis] > 1 && strides[axis] != expected {
            return None;
        }
        expected = expected.checked_mul(isize::try_from(shape[axis]).ok()?)?;
    }
    Some(named_dims(shape, layout, order))
}

/// `(n, channels, h, w)` of a view whose axes, taken in `order`, are the layout's memory order.
fn named_dims(shape: &[usize], layout: Layout, order: AxisOrder) -> [usize; 4] {
    let m = order.map(|axis| shape[axis]);
    match layout {
        Layout::Nchw => m,
        Layout::Nhwc => [m[0], m[3], m[1], m[2]],
    }
}

/// Finds how to read `view` as `layout` in place and returns its `(n, channels, h, w)`; when
/// two readings exist (axes of extent 1), the one whose channel count is `channels` wins.
fn read_as_layout<S: ::ndarray::Data<Elem = f32>>(
    view: &::ndarray::ArrayBase<S, ::ndarray::Ix4>,
    what: &'static str,
    layout: Layout,
    channels: usize,
) -> Result<[usize; 4], Error> {
    let shape = view.shape();
    let strides = view.strides();
    if let Some(axis) = strides.iter().position(|&s| s < 0) {
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
    let readings: Vec<[usize; 4]> = orders
        .iter()
        .filter_map(|&order| dense_in_order(shape, strides, layout, order))
        .collect();
    if let Some(d) = readings.iter().find(|d| d[1] == channels) {
        return Ok(*d);
    }
    let axes = match layout {
        Layout::Nchw => "[N, C, H, W] in standard order",
        Layout::Nhwc => "[N, H, W, C] in standard order, or [N, C, H, W] with channels-last memory",
    };
    Err(Error::ArrayView {
        what,
        problem: match readings.first() {
            Some(d) => format!("has {} channels, the plan expects {channels} ({axes})", d[1]),
            None => format!(
                "shape {shape:?} with strides {strides:?} is not dense in the plan's {layout:?} memory order \
                 (expected {axes}); make a standard copy first"
            ),
        },
    })
}

fn input_slice<'a>(plan: &Plan, view: &'a ArrayView4<'_, f32>) -> Result<(&'a [f32], InputDims), Error> {
    let conv = plan.conv();
    let [n, _, h, w] = read_as_layout(view, "input", conv.layout, conv.in_channels)?;
    Ok((memory_slice(view, "input")?, InputDims::new(n, h, w)))
}

/// Checks that `view` has the output's dims in one of the layout's readings.
fn check_output_dims(layout: Layout, what: &'static str, dims: [usize; 4], expected: OutputDims) -> Result<(), Error> {
    let want = [expected.n, expected.k, expected.h, expected.w];
    if dims == want {
        return Ok(());
    }
    Err(Error::ArrayView {
        what,
        problem: format!("(n, channels, h, w) = {dims:?}, the plan's output for this input is {want:?} ({layout:?})"),
    })
}

fn output_order_slice<'a>(
    layout: Layout,
    what: &'static str,
    view: &'a ArrayView4<'_, f32>,
    expected: OutputDims,
) -> Result<&'a [f32], Error> {
    let dims = read_as_layout(view, what, layout, expected.k)?;
    check_output_dims(layout, what, dims, expected)?;
    memory_slice(view, what)
}

fn check_output(layout: Layout, view: &ArrayViewMut4<'_, f32>, expected: OutputDims) -> Result<(), Error> {
    let dims = read_as_layout(view, "output", layout, expected.k)?;
    check_output_dims(layout, "output", dims, expected)
}

/// The view's elements in memory order. Its strides were checked dense and non-negative, so
/// this is the whole view with nothing between elements.
fn memory_slice<'a>(view: &'a ArrayView4<'_, f32>, what: &'static str) -> Result<&'a [f32], Error> {
    view.as_slice_memory_order()
        .ok_or_else(|| not_contiguous(what, view.raw_dim()))
}

fn output_slice_mut<'a>(view: &'a mut ArrayViewMut4<'_, f32>) -> Result<&'a mut [f32], Error> {
    let dim = view.raw_dim();
    view.as_slice_memory_order_mut()
        .ok_or_else(|| not_contiguous("output", dim))
}

fn not_contiguous(what: &'static str, dim: ::ndarray::Ix4) -> Error {
    Error::ArrayView {
        what,
        problem: format!("shape {:?} is not contiguous in memory", dim.slice()),
    }
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
}
