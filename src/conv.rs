//! The convolution's description: layout, stride, padding, groups and the fused activation,
//! with the output-shape arithmetic. Validation lives here and runs once, when a plan is made.
use crate::epilogue::Activation;
use crate::error::{checked_product, Error, Result};

/// Memory layout of input, output and residual (all three share it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub enum Layout {
    /// `[N, C, H, W]`: each channel is a contiguous image plane.
    #[default]
    Nchw,
    /// `[N, H, W, C]`: each pixel's channels are contiguous.
    Nhwc,
}

/// Spatial padding.
///
/// For a 1x1 kernel, SAME padding adds nothing: the output size is `ceil(H / stride)`,
/// exactly as VALID gives. (SAME pads by `(ceil(H/s) - 1) * s + 1 - H`, which is never
/// positive for a kernel of size 1.) Both ONNX variants are accepted and behave identically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub enum Padding {
    /// No padding: `Ho = ceil(H / sh)`.
    #[default]
    Valid,
    /// ONNX `SAME_UPPER`; for a 1x1 kernel the same as [`Padding::Valid`].
    SameUpper,
    /// ONNX `SAME_LOWER`; for a 1x1 kernel the same as [`Padding::Valid`].
    SameLower,
    /// Explicit zero padding on each border: `Ho = (H + top + bottom - 1) / sh + 1`.
    /// Outputs that read a padded pixel are `act(bias + residual)`.
    Explicit {
        /// Rows added above.
        top: usize,
        /// Rows added below.
        bottom: usize,
        /// Columns added on the left.
        left: usize,
        /// Columns added on the right.
        right: usize,
    },
}

impl Padding {
    /// The same padding `p` on all four borders.
    pub fn uniform(p: usize) -> Self {
        Padding::Explicit {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }

    /// `(top, bottom, left, right)` after resolving SAME for a 1x1 kernel.
    #[inline]
    pub fn borders(&self) -> (usize, usize, usize, usize) {
        match *self {
            Padding::Valid | Padding::SameUpper | Padding::SameLower => (0, 0, 0, 0),
            Padding::Explicit {
                top,
                bottom,
                left,
                right,
            } => (top, bottom, left, right),
        }
    }
}

/// The spatial size of one forward call's input: batch `n`, height `h`, width `w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InputDims {
    /// Batch size.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
}

impl InputDims {
    /// `InputDims { n, h, w }`.
    pub fn new(n: usize, h: usize, w: usize) -> Self {
        InputDims { n, h, w }
    }
}

/// The output's shape: `[n, k, h, w]` in NCHW, `[n, h, w, k]` in NHWC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutputDims {
    /// Batch size.
    pub n: usize,
    /// Output channels.
    pub k: usize,
    /// Output height `Ho`.
    pub h: usize,
    /// Output width `Wo`.
    pub w: usize,
}

impl OutputDims {
    /// Number of elements, `n * k * h * w` (checked).
    ///
    /// # Errors
    /// [`Error::SizeOverflow`] when the product overflows.
    #[inline]
    pub fn len(&self) -> Result<usize> {
        checked_product(&[self.n, self.k, self.h, self.w], "output length")
    }

    /// Whether the output has no elements.
    pub fn is_empty(&self) -> bool {
        self.n == 0 || self.k == 0 || self.h == 0 || self.w == 0
    }

    /// Calls `f(run, k)` for each run of consecutive elements of one output channel `k`, in
    /// element order: a channel plane of one image in NCHW, one element per pixel in NHWC.
    /// Per-channel work (PReLU slopes) then needs no division per element.
    pub(crate) fn for_each_channel_run(&self, layout: Layout, mut f: impl FnMut(std::ops::Range<usize>, usize)) {
        let p = self.h * self.w;
        match layout {
            Layout::Nchw => {
                for r in 0..self.n * self.k {
                    f(r * p..(r + 1) * p, r % self.k);
                }
            }
            Layout::Nhwc => {
                for q in 0..self.n * p {
                    for k in 0..self.k {
                        let i = q * self.k + k;
                        f(i..i + 1, k);
                    }
                }
            }
        }
    }
}

/// Description of a pointwise (1x1) convolution, the equivalent of PyTorch's
/// `Conv2d(in_channels, out_channels, kernel_size=1, stride, padding, groups)` followed by
/// an optional residual add and a fused activation:
///
/// `Y = act(W * X + bias + R)`
///
/// # Shapes
/// - weights: `[out_channels, in_channels / groups]`, row-major (PyTorch/ONNX `[K, C/g, 1, 1]`),
///   for both layouts;
/// - bias: `[out_channels]`;
/// - input: `[N, C, H, W]` (NCHW) or `[N, H, W, C]` (NHWC);
/// - output and residual: `[N, K, Ho, Wo]` or `[N, Ho, Wo, K]`, with
///   `Ho = (H + top + bottom - 1) / sh + 1`, `Wo = (W + left + right - 1) / sw + 1`
///   (for VALID and SAME: `Ho = ceil(H / sh)`).
///
/// An empty input (`N`, `H` or `W` zero) has an empty output (`Ho` or `Wo` is 0 whatever the
/// padding), and `forward` on it returns `Ok(())` after checking slice lengths.
///
/// # Example
/// ```
/// use pointwise::{Conv1x1, Layout, Padding, Activation, InputDims};
/// let conv = Conv1x1::new(64, 256).with_stride(2, 2).with_activation(Activation::Relu);
/// let out = conv.output_dims(InputDims::new(1, 56, 56)).unwrap();
/// assert_eq!((out.k, out.h, out.w), (256, 28, 28));
/// let same = Conv1x1::new(8, 8).with_stride(2, 2).with_padding(Padding::SameUpper);
/// assert_eq!(same.output_dims(InputDims::new(1, 5, 5)).unwrap().h, 3); // ceil(5 / 2)
/// ```
///
/// The builders return the changed description; dropping it is a warning (an error here):
/// ```compile_fail
/// #![deny(unused_must_use)]
/// let conv = pointwise::Conv1x1::new(8, 8);
/// conv.with_stride(2, 2); // does nothing: the result must be used
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conv1x1 {
    /// Input channels `C`.
    pub in_channels: usize,
    /// Output channels `K`.
    pub out_channels: usize,
    /// `(sh, sw)`, each at least 1.
    pub stride: (usize, usize),
    /// Spatial padding.
    pub padding: Padding,
    /// Group count `G`, dividing both `C` and `K`.
    pub groups: usize,
    /// Layout of input, output and residual.
    pub layout: Layout,
    /// Activation applied before the store.
    pub activation: Activation,
}

impl Default for Conv1x1 {
    /// One input and one output channel, stride 1, no padding, one group, NCHW, identity.
    fn default() -> Self {
        Conv1x1::new(1, 1)
    }
}

impl Conv1x1 {
    /// A convolution from `in_channels` to `out_channels` with stride 1, no padding,
    /// one group, NCHW layout and no activation.
    #[must_use]
    pub fn new(in_channels: usize, out_channels: usize) -> Self {
        Conv1x1 {
            in_channels,
            out_channels,
            stride: (1, 1),
            padding: Padding::Valid,
            groups: 1,
            layout: Layout::Nchw,
            activation: Activation::Identity,
        }
    }

    /// Sets the stride `(sh, sw)`.
    #[must_use]
    pub fn with_stride(mut self, sh: usize, sw: usize) -> Self {
        self.stride = (sh, sw);
        self
    }

    /// Sets the padding.
    #[must_use]
    pub fn with_padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Sets the group count.
    #[must_use]
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Sets the layout.
    #[must_use]
    pub fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Sets the fused activation.
    #[must_use]
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Checks every parameter.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] for zero channels or groups, [`Error::GroupsDoNotDivide`],
    /// [`Error::ZeroStride`], [`Error::InvalidActivation`], [`Error::SizeOverflow`] when the
    /// weight count overflows.
    pub fn validate(&self) -> Result<()> {
        if self.in_channels == 0 {
            return Err(Error::ZeroSize { what: "in_channels" });
        }
        if self.out_channels == 0 {
            return Err(Error::ZeroSize { what: "out_channels" });
        }
        if self.groups == 0 {
            return Err(Error::ZeroSize { what: "groups" });
        }
        if !self.in_channels.is_multiple_of(self.groups) {
            return Err(Error::GroupsDoNotDivide {
                groups: self.groups,
                what: "in_channels",
                channels: self.in_channels,
            });
        }
        if !self.out_channels.is_multiple_of(self.groups) {
            return Err(Error::GroupsDoNotDivide {
                groups: self.groups,
                what: "out_channels",
                channels: self.out_channels,
            });
        }
        if self.stride.0 == 0 || self.stride.1 == 0 {
            return Err(Error::ZeroStride(self.stride.0, self.stride.1));
        }
        self.activation.validate()?;
        self.weights_len()?;
        Ok(())
    }

    /// Number of weights, `out_channels * in_channels / groups`.
    ///
    /// # Errors
    /// [`Error::SizeOverflow`]; [`Error::ZeroSize`] when `groups` is 0.
    pub fn weights_len(&self) -> Result<usize> {
        if self.groups == 0 {
            return Err(Error::ZeroSize { what: "groups" });
        }
        checked_product(&[self.out_channels, self.in_channels / self.groups], "weights length")
    }

    /// Output height and width for an input of `h x w`.
    ///
    /// # Errors
    /// [`Error::ZeroStride`], [`Error::SizeOverflow`] when `h + top + bottom` overflows.
    pub fn output_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let (sh, sw) = self.stride;
        if sh == 0 || sw == 0 {
            return Err(Error::ZeroStride(sh, sw));
        }
        let (top, bottom, left, right) = self.padding.borders();
        let extent = |len: usize, a: usize, b: usize, s: usize| -> Result<usize> {
            if len == 0 {
                return Ok(0);
            }
            let padded = len
                .checked_add(a)
                .and_then(|v| v.checked_add(b))
                .ok_or(Error::SizeOverflow {
                    what: "padded input extent",
                })?;
            Ok((padded - 1) / s + 1)
        };
        Ok((extent(h, top, bottom, sh)?, extent(w, left, right, sw)?))
    }

    /// The output's shape for a given input shape.
    ///
    /// # Errors
    /// As [`Conv1x1::output_hw`].
    #[inline]
    pub fn output_dims(&self, input: InputDims) -> Result<OutputDims> {
        let (ho, wo) = self.output_hw(input.h, input.w)?;
        Ok(OutputDims {
            n: input.n,
            k: self.out_channels,
            h: ho,
            w: wo,
        })
    }

    /// Number of input elements, `n * in_channels * h * w` (checked).
    ///
    /// # Errors
    /// [`Error::SizeOverflow`].
    #[inline]
    pub fn input_len(&self, input: InputDims) -> Result<usize> {
        checked_product(&[input.n, self.in_channels, input.h, input.w], "input length")
    }
}

/// Every size a forward call needs, computed once per call with checked arithmetic.
/// Pixel `j` of the folded pixel axis is image `j / p`, output pixel `j % p`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub n: usize,
    pub c: usize,
    pub k: usize,
    pub groups: usize,
    pub cg: usize,
    pub kg: usize,
    pub h: usize,
    pub w: usize,
    pub wo: usize,
    /// Output pixels per image, `Ho * Wo`.
    pub p: usize,
    pub sh: usize,
    pub sw: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub layout: Layout,
}

impl Geometry {
    /// Validates the slice lengths for `dims` and returns the geometry, or `None` when the
    /// output is empty (after the lengths were checked).
    #[inline]
    pub fn new(
        conv: &Conv1x1,
        dims: InputDims,
        input_len: usize,
        residual_len: Option<usize>,
        output_len: usize,
    ) -> Result<Option<Geometry>> {
        let expected_in = conv.input_len(dims)?;
        let out = conv.output_dims(dims)?;
        let expected_out = out.len()?;
        if input_len != expected_in {
            return Err(Error::LengthMismatch {
                what: "input",
                expected: expected_in,
                got: input_len,
            });
        }
        if let Some(r) = residual_len {
            if r != expected_out {
                return Err(Error::LengthMismatch {
                    what: "residual",
                    expected: expected_out,
                    got: r,
                });
            }
        }
        if output_len != expected_out {
            return Err(Error::LengthMismatch {
                what: "output",
                expected: expected_out,
                got: output_len,
            });
        }
        if expected_out == 0 {
            return Ok(None);
        }
        let (pad_top, _, pad_left, _) = conv.padding.borders();
        Ok(Some(Geometry {
            n: dims.n,
            c: conv.in_channels,
            k: conv.out_channels,
            groups: conv.groups,
            cg: conv.in_channels / conv.groups,
            kg: conv.out_channels / conv.groups,
            h: dims.h,
            w: dims.w,
            wo: out.w,
            p: out.h * out.w,
            sh: conv.stride.0,
            sw: conv.stride.1,
            pad_top,
            pad_left,
            layout: conv.layout,
        }))
    }

    /// Distance between consecutive channels of one pixel in the input.
    pub fn input_channel_stride(&self) -> usize {
        match self.layout {
            Layout::Nchw => self.h * self.w,
            Layout::Nhwc => 1,
        }
    }

    /// Whether output pixel `q` of each image reads input pixel `q` (stride 1, no padding):
    /// the pixel map is then affine within an image.
    pub fn is_dense(&self) -> bool {
        self.sh == 1
            && self.sw == 1
            && self.pad_top == 0
            && self.pad_left == 0
            && self.wo == self.w
            && self.p == self.h * self.w
    }

    /// Input distance between consecutive pixels of one image row (`sw` pixels apart).
    pub fn input_pixel_spacing(&self) -> usize {
        match self.layout {
            Layout::Nchw => self.sw,
            Layout::Nhwc => self.sw * self.c,
        }
    }

    /// Offset in the input of channel 0 of the pixel feeding folded output pixel `j`,
    /// or `None` when that output reads a padded (zero) pixel.
    #[inline]
    #[cfg(test)]
    pub fn input_pixel_offset(&self, j: usize) -> Option<usize> {
        let img = j / self.p;
        let q = j % self.p;
        self.input_offset(img, q / self.wo, q % self.wo)
    }

    /// Offset in the input of channel 0 of the pixel feeding output `(oy, ox)` of image
    /// `img`, or `None` when it is padding.
    #[inline]
    pub fn input_offset(&self, img: usize, oy: usize, ox: usize) -> Option<usize> {
        let iy = (oy * self.sh).checked_sub(self.pad_top)?;
        let ix = (ox * self.sw).checked_sub(self.pad_left)?;
        if iy >= self.h || ix >= self.w {
            return None;
        }
        let pix = iy * self.w + ix;
        Some(match self.layout {
            Layout::Nchw => img * self.c * self.h * self.w + pix,
            Layout::Nhwc => (img * self.h * self.w + pix) * self.c,
        })
    }

    /// Offset in the output of channel 0 of folded output pixel `j`.
    #[inline]
    pub fn output_pixel_offset(&self, j: usize) -> usize {
        match self.layout {
            // One image (the common case) needs no division.
            Layout::Nchw if self.n == 1 => j,
            Layout::Nchw => self.output_offset(j / self.p, j % self.p),
            Layout::Nhwc => j * self.k,
        }
    }

    /// Offset in the output of channel 0 of pixel `q` (`oy * Wo + ox`) of image `img`.
    #[inline]
    pub fn output_offset(&self, img: usize, q: usize) -> usize {
        match self.layout {
            Layout::Nchw => img * self.k * self.p + q,
            Layout::Nhwc => (img * self.p + q) * self.k,
        }
    }

    /// Distance between consecutive channels of one pixel in the output.
    pub fn output_channel_stride(&self) -> usize {
        match self.layout {
            Layout::Nchw => self.p,
            Layout::Nhwc => 1,
        }
    }
}
