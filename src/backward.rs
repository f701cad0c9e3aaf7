//! The backward passes of a 1x1 convolution, each lowered onto the forward engine's GEMM:
//!
//! - **data**: `dX = W^T * dZ` is a forward convolution from `K` to `C` channels (groups `G`,
//!   stride 1, no padding) with the transposed weights, packed once by [`BackwardPlan::new`];
//!   stride and padding become a scatter through the forward pixel map (each input pixel is
//!   read by at most one output pixel, so the scatter writes each element once; pixels no
//!   output reads get 0, or keep their value when accumulating);
//! - **weights**: `dW_g[K/G, C/G] = dZ_g[K/G, N*Ho*Wo] * X_g[C/G, N*Ho*Wo]^T` per group is a
//!   forward product whose reduction runs over the `N*Ho*Wo` output pixels: the smaller of
//!   `dZ_g` and `X_g` is packed as the product's weights, the other read in place as its input
//!   (`PixelReduction`). NCHW tensors of one image and NHWC tensors of one group without
//!   stride or padding are read as given; others are gathered through the pixel map first.
//!   The forward engine blocks and splits that long reduction with its fixed-order combine,
//!   so `dW` is bit-identical for every thread count;
//! - **bias**: `db[k] = sum of dZ[k]`, summed image by image and pixel by pixel;
//! - **activation**: `dZ = dY * act'(z)` from the saved output `y` or pre-activation `z`
//!   ([`Saved`]); [`Plan::forward_training`](crate::Plan::forward_training) writes both.
//!
//! With a residual `Y = act(W X + b + R)`, the residual's gradient is `dZ` itself.
use crate::conv::Geometry;
use crate::epilogue::{normal_cdf, GELU_CUBIC, GELU_SQRT_2_OVER_PI};
use crate::error::{checked_product, Error, Result};
use crate::{Activation, Conv1x1, InputDims, Layout, OutputDims, Plan, PlanOptions, WeightOrder, Workspace};

/// Whether a backward pass overwrites its output or adds into it (`beta = 0` or `1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub enum Accumulate {
    /// `out = gradient`.
    #[default]
    Overwrite,
    /// `out += gradient` (a tensor feeding several branches; gradient accumulation over
    /// micro-batches).
    Add,
}

impl Accumulate {
    /// Writes `value` into `out`, or adds it.
    #[inline(always)]
    fn store(self, out: &mut f32, value: f32) {
        *out = match self {
            Accumulate::Overwrite => value,
            Accumulate::Add => *out + value,
        };
    }
}

/// What the forward pass saved for the activation's gradient.
#[derive(Debug, Clone, Copy)]
pub enum Saved<'a> {
    /// The output `y = act(z)`: enough for Identity, ReLU, ReLU6, Clamp, Sigmoid, Tanh,
    /// HardSigmoid, and LeakyReLU / PReLU with positive slopes.
    Output(&'a [f32]),
    /// The pre-activation `z = W X + b + R` (from
    /// [`Plan::forward_training`](crate::Plan::forward_training)): enough for every activation.
    PreActivation(&'a [f32]),
}

impl<'a> Saved<'a> {
    /// The saved values, and whether they are the output (else the pre-activation).
    fn values(self) -> (&'a [f32], bool) {
        match self {
            Saved::Output(y) => (y, true),
            Saved::PreActivation(z) => (z, false),
        }
    }
}

/// The gradients one [`BackwardPlan::backward`] step writes, each optional: a step writes
/// only those it is given.
///
/// # Shapes
/// `input`: the forward input's shape; `weights`: `[K, C/G]`; `bias`: `[K]`; `residual`
/// (the gradient of the pre-activation `z`, which is also the residual's): the forward
/// output's shape.
///
/// # Example
/// ```
/// # use pointwise::{Accumulate, Gradients};
/// let (mut dx, mut dw) = (vec![0.0f32; 6], vec![0.0f32; 6]);
/// let grads = Gradients::new().input(&mut dx).weights(&mut dw).accumulate(Accumulate::Add);
/// # let _ = grads;
/// ```
#[derive(Debug, Default)]
pub struct Gradients<'a> {
    input: Option<&'a mut [f32]>,
    weights: Option<&'a mut [f32]>,
    bias: Option<&'a mut [f32]>,
    residual: Option<&'a mut [f32]>,
    prelu_slope: Option<&'a mut [f32]>,
    accumulate: Accumulate,
}

impl<'a> Gradients<'a> {
    /// No gradients, overwriting.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `dx` (the data gradient, scattered through stride and padding).
    pub fn input(mut self, dx: &'a mut [f32]) -> Self {
        self.input = Some(dx);
        self
    }

    /// Writes `dw[K, C/G]`.
    pub fn weights(mut self, dw: &'a mut [f32]) -> Self {
        self.weights = Some(dw);
        self
    }

    /// Writes `db[K]`.
    pub fn bias(mut self, db: &'a mut [f32]) -> Self {
        self.bias = Some(db);
        self
    }

    /// Writes `dz = dy * act'(z)`: the gradient of the pre-activation, and so of the residual
    /// when the forward pass added one (`y = act(W x + b + r)`).
    pub fn residual(mut self, dz: &'a mut [f32]) -> Self {
        self.residual = Some(dz);
        self
    }

    /// Writes the PReLU slopes' gradient `ds[K]`: `ds[k] = sum of dy * z` over channel `k`'s
    /// elements with `z <= 0` (needs the pre-activation, [`Saved::PreActivation`]).
    pub fn prelu_slope(mut self, ds: &'a mut [f32]) -> Self {
        self.prelu_slope = Some(ds);
        self
    }

    /// Whether every gradient given overwrites its buffer (the default) or adds into it.
    pub fn accumulate(mut self, accumulate: Accumulate) -> Self {
        self.accumulate = accumulate;
        self
    }
}

/// The backward passes of one convolution: validated once, with the transposed weights for
/// the data gradient packed once.
///
/// # Shapes
/// As the forward [`Plan`]: `x` and `dx` have the input's shape (`[N, C, H, W]` or
/// `[N, H, W, C]`), `dy`, `dz`, `y` and `z` the output's (`[N, K, Ho, Wo]` or
/// `[N, Ho, Wo, K]`), `dw` is `[K, C/G]`, `db` is `[K]`.
///
/// # Example
/// ```
/// use pointwise::{Accumulate, BackwardPlan, Conv1x1, InputDims, PlanOptions, Workspace};
/// let conv = Conv1x1::new(3, 2);
/// let w = [1.0, 2.0, 3.0, 0.5, 0.0, -1.0];
/// let grads = BackwardPlan::new(&conv, &w, PlanOptions::default()).unwrap();
/// let dims = InputDims::new(1, 1, 1);
/// let (x, dz) = ([1.0, 2.0, 3.0], [1.0, -1.0]);
/// let (mut dx, mut dw, mut db) = ([0.0; 3], [0.0; 6], [0.0; 2]);
/// let mut ws = Workspace::new();
/// grads.data(&dz, dims, &mut dx, Accumulate::Overwrite, &mut ws).unwrap();
/// grads.weights(&x, &dz, dims, &mut dw, Accumulate::Overwrite, &mut ws).unwrap();
/// grads.bias(&dz, dims, &mut db, Accumulate::Overwrite).unwrap();
/// assert_eq!(dx, [0.5, 2.0, 4.0]); // W^T dz
/// assert_eq!(dw, [1.0, 2.0, 3.0, -1.0, -2.0, -3.0]); // dz x^T
/// assert_eq!(db, [1.0, -1.0]);
/// ```
pub struct BackwardPlan {
    conv: Conv1x1,
    /// `dX' = W^T dZ`: `K -> C`, groups `G`, stride 1, no padding, identity, the same layout.
    data: Plan,
    /// PReLU slopes `[K]` for the activation gradient.
    slope: Option<Vec<f32>>,
    options: PlanOptions,
}

impl std::fmt::Debug for BackwardPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackwardPlan")
            .field("conv", &self.conv)
            .field("data_kernel", &self.data.kernel())
            .finish()
    }
}

impl BackwardPlan {
    /// Validates `conv` and packs `W^T` for the data gradient; `weights` is `[K, C/G]`, as for
    /// [`Plan::new`]. For PReLU, give the slopes with [`BackwardPlan::with_prelu_slope`].
    ///
    /// # Errors
    /// As [`Plan::new`].
    pub fn new(conv: &Conv1x1, weights: &[f32], options: PlanOptions) -> Result<Self> {
        conv.validate()?;
        let expected = conv.weights_len()?;
        if weights.len() != expected {
            return Err(Error::LengthMismatch {
                what: "weights",
                expected,
                got: weights.len(),
            });
        }
        let (g, kg, cg) = (
            conv.groups,
            conv.out_channels / conv.groups,
            conv.in_channels / conv.groups,
        );
        // W^T per group: row `g*C/G + c` of the data convolution is column `c` of group g's
        // `[K/G, C/G]` block.
        let mut transposed = vec![0.0f32; expected];
        for group in 0..g {
            let block = &weights[group * kg * cg..(group + 1) * kg * cg];
            let out = &mut transposed[group * kg * cg..(group + 1) * kg * cg];
            for (kk, row) in block.chunks_exact(cg).enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    out[c * kg + kk] = v;
                }
            }
        }
        let data_conv = Conv1x1::new(conv.out_channels, conv.in_channels)
            .with_groups(g)
            .with_layout(conv.layout);
        let data = Plan::new(&data_conv, &transposed, None, options)?;
        Ok(BackwardPlan {
            conv: *conv,
            data,
            slope: None,
            options,
        })
    }

    /// These passes with the PReLU slopes `[K]` for [`BackwardPlan::activation`].
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] (`prelu slope`) for a count other than `K`;
    /// [`Error::InvalidActivation`] for slopes with another activation or a non-finite slope.
    pub fn with_prelu_slope(mut self, slope: &[f32]) -> Result<Self> {
        if !self.conv.activation.needs_slope() {
            return Err(Error::InvalidActivation("PReLU slopes given to another activation"));
        }
        if slope.len() != self.conv.out_channels {
            return Err(Error::LengthMismatch {
                what: "prelu slope",
                expected: self.conv.out_channels,
                got: slope.len(),
            });
        }
        if slope.iter().any(|s| !s.is_finite()) {
            return Err(Error::InvalidActivation("PReLU slope is not finite"));
        }
        self.slope = Some(slope.to_vec());
        Ok(self)
    }

    /// The forward convolution these passes differentiate.
    pub fn conv(&self) -> &Conv1x1 {
        &self.conv
    }

    /// The geometry of the forward call on `dims`, with the slices named as this pass names
    /// them; `None` when the output is empty.
    fn geometry(
        &self,
        dims: InputDims,
        input: (&'static str, usize),
        output: (&'static str, usize),
    ) -> Result<Option<Geometry>> {
        let expected_in = self.conv.input_len(dims)?;
        let expected_out = self.conv.output_dims(dims)?.len()?;
        for ((what, got), expected) in [(input, expected_in), (output, expected_out)] {
            if got != expected {
                return Err(Error::LengthMismatch { what, expected, got });
            }
        }
        Geometry::new(&self.conv, dims, expected_in, None, expected_out)
    }

    /// The data gradient `dx = W^T dz`, scattered through stride and padding: input pixels no
    /// output reads get 0 (`Overwrite`) or keep their value (`Add`).
    ///
    /// # Shapes
    /// `dz`: the forward output's shape for input `dims`; `dx`: the forward input's.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] (`grad_output`, `grad_input`), [`Error::SizeOverflow`]; on
    /// error `dx` is untouched.
    pub fn data(
        &self,
        dz: &[f32],
        dims: InputDims,
        dx: &mut [f32],
        accumulate: Accumulate,
        workspace: &mut Workspace,
    ) -> Result<()> {
        let Some(geom) = self.geometry(dims, ("grad_input", dx.len()), ("grad_output", dz.len()))? else {
            if accumulate == Accumulate::Overwrite {
                dx.fill(0.0);
            }
            return Ok(());
        };
        let out_dims = InputDims::new(geom.n, geom.p / geom.wo, geom.wo);
        if geom.is_dense() {
            return match accumulate {
                Accumulate::Overwrite => self.data.forward(dz, out_dims, None, dx, workspace),
                Accumulate::Add => self.data.forward_residual_in_place(dz, out_dims, dx, workspace),
            };
        }
        // Strided or padded: the product at the output pixels, then the scatter.
        let mut product = workspace.take_scratch(checked_product(&[geom.n, geom.c, geom.p], "grad_input")?);
        let result = self.data.forward(dz, out_dims, None, &mut product, workspace);
        if result.is_ok() {
            if accumulate == Accumulate::Overwrite {
                dx.fill(0.0);
            }
            scatter_to_input(&geom, &product, dx, accumulate);
        }
        workspace.return_scratch(product);
        result
    }

    /// The weight gradient `dw[K, C/G] = sum over images and output pixels of dz x^T`,
    /// bit-identical for every thread count.
    ///
    /// # Shapes
    /// `x`: the forward input for `dims`; `dz`: the forward output's shape; `dw`: `[K, C/G]`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] (`input`, `grad_output`, `grad_weights`),
    /// [`Error::SizeOverflow`]; on error `dw` is untouched.
    pub fn weights(
        &self,
        x: &[f32],
        dz: &[f32],
        dims: InputDims,
        dw: &mut [f32],
        accumulate: Accumulate,
        workspace: &mut Workspace,
    ) -> Result<()> {
        let expected_dw = self.conv.weights_len()?;
        if dw.len() != expected_dw {
            return Err(Error::LengthMismatch {
                what: "grad_weights",
                expected: expected_dw,
                got: dw.len(),
            });
        }
        let Some(geom) = self.geometry(dims, ("input", x.len()), ("grad_output", dz.len()))? else {
            if accumulate == Accumulate::Overwrite {
                dw.fill(0.0);
            }
            return Ok(());
        };
        let pixels = checked_product(&[geom.n, geom.p], "grad_weights reduction")?;
        let form = if geom.layout == Layout::Nhwc && geom.groups == 1 && geom.is_dense() {
            OperandForm::Columns
        } else {
            OperandForm::Rows
        };
        let in_place = form == OperandForm::Columns || (geom.layout == Layout::Nchw && geom.n == 1 && geom.is_dense());
        let mut dz_rows = Vec::new();
        let mut x_rows = Vec::new();
        if !in_place {
            dz_rows = workspace.take_scratch(checked_product(&[geom.kg, pixels], "grad_weights scratch")?);
            x_rows = workspace.take_scratch(checked_product(&[geom.cg, pixels], "grad_weights scratch")?);
        }
        let mut transposed = workspace.take_scratch(geom.kg * geom.cg);
        let mut result = Ok(());
        for g in 0..geom.groups {
            let (dz_g, x_g): (&[f32], &[f32]) = if !in_place {
                gather_output_rows(&geom, dz, g, &mut dz_rows);
                gather_input_rows(&geom, x, g, &mut x_rows);
                (&dz_rows, &x_rows)
            } else if form == OperandForm::Columns {
                (dz, x)
            } else {
                (
                    &dz[g * geom.kg * geom.p..(g + 1) * geom.kg * geom.p],
                    &x[g * geom.cg * geom.p..(g + 1) * geom.cg * geom.p],
                )
            };
            let product = PixelReduction {
                form,
                pixels,
                dz: (dz_g, geom.kg),
                x: (x_g, geom.cg),
            };
            let dw_g = &mut dw[g * geom.kg * geom.cg..(g + 1) * geom.kg * geom.cg];
            result = product.run(self.options, dw_g, accumulate, &mut transposed, workspace);
            if result.is_err() {
                break;
            }
        }
        for buffer in [dz_rows, x_rows, transposed] {
            workspace.return_scratch(buffer);
        }
        result
    }

    /// The bias gradient `db[k] = sum over images and output pixels of dz[k]`, in a fixed
    /// order (NCHW: 16 partial sums by pixel index, added pairwise; NHWC: pixel order).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] (`grad_output`, `grad_bias`); on error `db` is untouched.
    pub fn bias(&self, dz: &[f32], dims: InputDims, db: &mut [f32], accumulate: Accumulate) -> Result<()> {
        let out = self.conv.output_dims(dims)?;
        let expected = out.len()?;
        if dz.len() != expected {
            return Err(Error::LengthMismatch {
                what: "grad_output",
                expected,
                got: dz.len(),
            });
        }
        if db.len() != out.k {
            return Err(Error::LengthMismatch {
                what: "grad_bias",
                expected: out.k,
                got: db.len(),
            });
        }
        let p = out.h * out.w;
        match self.conv.layout {
            Layout::Nchw => {
                // Each channel's rows (one per image) summed into BIAS_LANES partial sums by
                // element index, then those added pairwise: a fixed order (vectorized and
                // without one long dependency chain), whatever the thread count.
                for (k, db_k) in db.iter_mut().enumerate() {
                    let mut lanes = [0.0f32; BIAS_LANES];
                    for img in 0..out.n {
                        let row = &dz[(img * out.k + k) * p..][..p];
                        let mut chunks = row.chunks_exact(BIAS_LANES);
                        for chunk in &mut chunks {
                            for (l, &v) in lanes.iter_mut().zip(chunk) {
                                *l += v;
                            }
                        }
                        for (l, &v) in lanes.iter_mut().zip(chunks.remainder()) {
                            *l += v;
                        }
                    }
                    let mut width = BIAS_LANES;
                    while width > 1 {
                        width /= 2;
                        for j in 0..width {
                            lanes[j] += lanes[j + width];
                        }
                    }
                    accumulate.store(db_k, lanes[0]);
                }
            }
            Layout::Nhwc => {
                // Pixel rows in order, each channel's sum in its own lane.
                let mut sums = vec![0.0f32; out.k];
                for row in dz.chunks_exact(out.k) {
                    for (s, &v) in sums.iter_mut().zip(row) {
                        *s += v;
                    }
                }
                for (db_k, &sum) in db.iter_mut().zip(&sums) {
                    accumulate.store(db_k, sum);
                }
            }
        }
        Ok(())
    }

    /// The activation's gradient `dz = dy * act'(z)`, from what the forward pass saved.
    ///
    /// # Shapes
    /// `dy`, the saved tensor and `dz`: the forward output's shape for input `dims`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] (`grad_output`, `saved`, `grad_pre_activation`);
    /// [`Error::InvalidActivation`] when the activation's derivative cannot be read from the
    /// saved output (give the pre-activation) or PReLU slopes are missing. On error `dz` is
    /// untouched.
    pub fn activation(&self, dy: &[f32], saved: Saved<'_>, dims: InputDims, dz: &mut [f32]) -> Result<()> {
        let (out, expected) = self.check_activation(dy, saved, dims)?;
        if dz.len() != expected {
            return Err(Error::LengthMismatch {
                what: "grad_pre_activation",
                expected,
                got: dz.len(),
            });
        }
        self.activation_gradient(dy, saved, out, dz);
        Ok(())
    }

    /// One backward step through the layer: `dz = dy * act'(z)` from what the forward pass
    /// saved, computed once and read by every pass asked for (data, weights, bias), and
    /// written out as the residual's gradient on request. Every length is checked before
    /// anything is written.
    ///
    /// `dz` is computed straight into the residual gradient's buffer when one is given (and
    /// gradients overwrite), else into the workspace; with the identity activation `dy` is
    /// read as it is.
    ///
    /// # Shapes
    /// `x`: the forward input for `dims`; `dy` and the saved tensor: the forward output's
    /// shape; the gradients: see [`Gradients`].
    ///
    /// # Errors
    /// As [`BackwardPlan::activation`], [`BackwardPlan::data`], [`BackwardPlan::weights`] and
    /// [`BackwardPlan::bias`] (`grad_residual` for the residual gradient,
    /// `grad_prelu_slope` for the slopes'); [`Error::InvalidActivation`] for a slope gradient
    /// of another activation than PReLU or from the saved output. On error no gradient buffer
    /// is touched.
    ///
    /// # Example
    /// ```
    /// use pointwise::{Activation, BackwardPlan, Conv1x1, Gradients, InputDims, Plan, PlanOptions, Saved, Workspace};
    /// let conv = Conv1x1::new(2, 1).with_activation(Activation::Relu);
    /// let (w, dims) = ([1.0, -1.0], InputDims::new(1, 1, 2));
    /// let x = [3.0, 1.0, 1.0, 2.0]; // channel 0, then channel 1
    /// let plan = Plan::new(&conv, &w, None, PlanOptions::default()).unwrap();
    /// let grads = BackwardPlan::new(&conv, &w, PlanOptions::default()).unwrap();
    /// let mut ws = Workspace::new();
    /// let (mut z, mut y) = ([0.0; 2], [0.0; 2]);
    /// plan.forward_training(&x, dims, None, &mut z, &mut y, &mut ws).unwrap();
    /// assert_eq!(y, [2.0, 0.0]); // relu(3 - 1), relu(1 - 2)
    /// let (mut dx, mut dw, mut db) = ([0.0; 4], [0.0; 2], [0.0; 1]);
    /// let dy = [1.0, 1.0];
    /// let step = Gradients::new().input(&mut dx).weights(&mut dw).bias(&mut db);
    /// grads.backward(&x, &dy, Saved::Output(&y), dims, step, &mut ws).unwrap();
    /// assert_eq!(dw, [3.0, 1.0]); // only the first pixel passes the ReLU
    /// assert_eq!(db, [1.0]);
    /// assert_eq!(dx, [1.0, 0.0, -1.0, 0.0]);
    /// ```
    pub fn backward(
        &self,
        x: &[f32],
        dy: &[f32],
        saved: Saved<'_>,
        dims: InputDims,
        gradients: Gradients<'_>,
        workspace: &mut Workspace,
    ) -> Result<()> {
        let Gradients {
            input,
            weights,
            bias,
            residual,
            prelu_slope,
            accumulate,
        } = gradients;
        let (out_dims, out_len) = self.check_activation(dy, saved, dims)?;
        let in_len = self.conv.input_len(dims)?;
        let checks = [
            ("input", Some(x.len()), in_len),
            ("grad_input", input.as_deref().map(<[f32]>::len), in_len),
            (
                "grad_weights",
                weights.as_deref().map(<[f32]>::len),
                self.conv.weights_len()?,
            ),
            ("grad_bias", bias.as_deref().map(<[f32]>::len), self.conv.out_channels),
            ("grad_residual", residual.as_deref().map(<[f32]>::len), out_len),
            (
                "grad_prelu_slope",
                prelu_slope.as_deref().map(<[f32]>::len),
                self.conv.out_channels,
            ),
        ];
        for (what, got, expected) in checks {
            if let Some(got) = got.filter(|&got| got != expected) {
                return Err(Error::LengthMismatch { what, expected, got });
            }
        }
        let z = match (saved, prelu_slope.is_some()) {
            (_, false) => None,
            (_, true) if self.conv.activation != Activation::Prelu => {
                return Err(Error::InvalidActivation(
                    "a PReLU slope gradient asked of another activation",
                ));
            }
            (Saved::PreActivation(z), true) => Some(z),
            (Saved::Output(_), true) => {
                return Err(Error::InvalidActivation(
                    "the PReLU slope gradient needs the pre-activation z (Saved::PreActivation)",
                ));
            }
        };
        // Sizes of every pass (overflow) before any write.
        if out_len > 0 {
            Geometry::new(&self.conv, dims, x.len(), None, out_len)?;
        }
        // dz: dy itself (identity), the residual gradient's buffer, or workspace scratch.
        let identity = self.conv.activation == Activation::Identity;
        let mut residual = residual;
        let mut scratch = Vec::new();
        let dz: &[f32] = if identity {
            dy
        } else if let Some(r) = residual.take_if(|_| accumulate == Accumulate::Overwrite) {
            // Computed in place: the residual's gradient is written once, and read as dz.
            self.activation_gradient(dy, saved, out_dims, r);
            r
        } else {
            scratch = workspace.take_scratch(out_len);
            self.activation_gradient(dy, saved, out_dims, &mut scratch);
            &scratch
        };
        let mut result = Ok(());
        if let Some(r) = residual {
            r.iter_mut().zip(dz).for_each(|(r, &d)| accumulate.store(r, d));
        }
        if let (Some(ds), Some(z)) = (prelu_slope, z) {
            slope_gradient(out_dims, self.conv.layout, dy, z, ds, accumulate);
        }
        if let Some(db) = bias {
            result = result.and_then(|()| self.bias(dz, dims, db, accumulate));
        }
        if let Some(dw) = weights {
            result = result.and_then(|()| self.weights(x, dz, dims, dw, accumulate, workspace));
        }
        if let Some(dx) = input {
            result = result.and_then(|()| self.data(dz, dims, dx, accumulate, workspace));
        }
        workspace.return_scratch(scratch);
        result
    }

    /// Checks `dy`, the saved tensor and the activation's needs; returns the output's
    /// dimensions and length.
    fn check_activation(&self, dy: &[f32], saved: Saved<'_>, dims: InputDims) -> Result<(OutputDims, usize)> {
        let out = self.conv.output_dims(dims)?;
        let expected = out.len()?;
        let (values, from_output) = saved.values();
        for (what, got) in [("grad_output", dy.len()), ("saved", values.len())] {
            if got != expected {
                return Err(Error::LengthMismatch { what, expected, got });
            }
        }
        let act = self.conv.activation;
        let slopes: &[f32] = self.slope.as_deref().unwrap_or_default();
        if act.needs_slope() && self.slope.is_none() {
            return Err(Error::InvalidActivation(
                "PReLU backward needs the slopes (with_prelu_slope)",
            ));
        }
        if from_output && !derivative_follows_from_output(act, slopes) {
            return Err(Error::InvalidActivation(
                "this activation's derivative needs the pre-activation z (Saved::PreActivation)",
            ));
        }
        Ok((out, expected))
    }

    /// `dz = dy * act'(z)` on checked lengths. The activation is matched once outside the
    /// element loop, so the piecewise-linear ones run as vectorized selects.
    fn activation_gradient(&self, dy: &[f32], saved: Saved<'_>, out: OutputDims, dz: &mut [f32]) {
        let (values, from_output) = saved.values();
        macro_rules! each {
            ($act:expr) => {{
                let act = $act;
                for (dz_i, (&dy_i, &v)) in dz.iter_mut().zip(dy.iter().zip(values)) {
                    *dz_i = dy_i * derivative(act, v, from_output, 0.0);
                }
            }};
        }
        match self.conv.activation {
            Activation::Identity => each!(Activation::Identity),
            Activation::Relu => each!(Activation::Relu),
            Activation::Relu6 => each!(Activation::Relu6),
            Activation::Clamp { min, max } => each!(Activation::Clamp { min, max }),
            Activation::LeakyRelu { alpha } => each!(Activation::LeakyRelu { alpha }),
            Activation::Prelu => {
                let slopes = self.slope.as_deref().unwrap_or_default();
                out.for_each_channel_run(self.conv.layout, |run, k| {
                    let elements = dz[run.clone()].iter_mut().zip(dy[run.clone()].iter().zip(&values[run]));
                    for (dz_i, (&dy_i, &v)) in elements {
                        *dz_i = dy_i * derivative(Activation::Prelu, v, from_output, slopes[k]);
                    }
                });
            }
            a => each!(a),
        }
    }
}

/// `ds[k] = sum of dy * z` over channel `k`'s elements with `z <= 0` (PReLU:
/// `y = s_k z` there), in element order per channel.
fn slope_gradient(out: OutputDims, layout: Layout, dy: &[f32], z: &[f32], ds: &mut [f32], accumulate: Accumulate) {
    let mut sums = vec![0.0f32; out.k];
    out.for_each_channel_run(layout, |run, k| {
        for (&g, &v) in dy[run.clone()].iter().zip(&z[run]) {
            if v <= 0.0 {
                sums[k] += g * v;
            }
        }
    });
    for (d, s) in ds.iter_mut().zip(sums) {
        accumulate.store(d, s);
    }
}

/// Partial sums per channel of the NCHW bias gradient.
const BIAS_LANES: usize = 16;

/// How the operands of `dW_g = dZ_g X_g^T` lie in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OperandForm {
    /// `[rows, N*Ho*Wo]` row-major (NCHW tensors of one image, or gathered).
    Rows,
    /// `[N*Ho*Wo, rows]` row-major (NHWC tensors of one group without stride or padding).
    Columns,
}

/// One group's weight gradient as a forward product whose reduction runs over the pixels.
struct PixelReduction<'a> {
    form: OperandForm,
    /// `N*Ho*Wo`, the reduction length.
    pixels: usize,
    /// dZ_g and its row count `K/G`.
    dz: (&'a [f32], usize),
    /// X_g and its row count `C/G`.
    x: (&'a [f32], usize),
}

impl PixelReduction<'_> {
    /// Writes (or adds) `dw_g[K/G, C/G]`. The smaller operand is packed as the product's
    /// weights (packing costs its size on every call) unless the transpose that choice
    /// brings costs more; the other is read in place as its input. Rows-form products are
    /// NHWC (input rows are pixels, weights `[rows, pixels]`), columns-form products NCHW
    /// (input channels are the pixels, weights given input-major), and whichever product
    /// gives `dw_g^T` is transposed through `transposed`.
    fn run(
        &self,
        options: PlanOptions,
        dw_g: &mut [f32],
        accumulate: Accumulate,
        transposed: &mut [f32],
        workspace: &mut Workspace,
    ) -> Result<()> {
        let (kg, cg) = (self.dz.1, self.x.1);
        // Packing dZ_g instead of X_g saves (C/G - K/G) * pixels values of packing, and, in
        // the rows form, costs a transpose of the K/G x C/G result (a read and a write of
        // each value). Choose by the values moved.
        let transpose_cost = match self.form {
            OperandForm::Rows => 2 * kg * cg,
            OperandForm::Columns => 0,
        };
        let pack_dz = kg < cg && (cg - kg) * self.pixels > transpose_cost;
        let ((packed, packed_rows), (streamed, streamed_rows)) =
            if pack_dz { (self.dz, self.x) } else { (self.x, self.dz) };
        let (layout, order) = match self.form {
            OperandForm::Rows => (Layout::Nhwc, WeightOrder::OutputMajor),
            OperandForm::Columns => (Layout::Nchw, WeightOrder::InputMajor),
        };
        let conv = Conv1x1::new(self.pixels, packed_rows).with_layout(layout);
        let plan = Plan::builder(&conv, packed)
            .weight_order(order)
            .options(options)
            .build()?;
        let dims = InputDims::new(1, 1, streamed_rows);
        // Rows form gives [streamed, packed]; columns form [packed, streamed].
        let gives_dw = (self.form == OperandForm::Rows) != pack_dz;
        if gives_dw {
            return match accumulate {
                Accumulate::Overwrite => plan.forward(streamed, dims, None, dw_g, workspace),
                Accumulate::Add => plan.forward_residual_in_place(streamed, dims, dw_g, workspace),
            };
        }
        plan.forward(streamed, dims, None, transposed, workspace)?;
        for (kk, row) in dw_g.chunks_exact_mut(cg).enumerate() {
            for (cc, out) in row.iter_mut().enumerate() {
                accumulate.store(out, transposed[cc * kg + kk]);
            }
        }
        Ok(())
    }
}

/// Whether `act'(z)` is a function of `y = act(z)`.
fn derivative_follows_from_output(act: Activation, slopes: &[f32]) -> bool {
    match act {
        Activation::Identity
        | Activation::Relu
        | Activation::Relu6
        | Activation::Clamp { .. }
        | Activation::HardSigmoid { .. }
        | Activation::Sigmoid
        | Activation::Tanh => true,
        Activation::LeakyRelu { alpha } => alpha > 0.0,
        Activation::Prelu => slopes.iter().all(|&s| s > 0.0),
        Activation::HardSwish | Activation::Silu | Activation::Gelu | Activation::GeluTanh => false,
    }
}

/// `act'(z)`, given `v = z` or (`from_output`) `v = act(z)`. At the kinks, the derivative of
/// the flat side (PyTorch's convention: ReLU'(0) = 0, Clamp' = 0 at its bounds).
#[inline(always)]
fn derivative(act: Activation, v: f32, from_output: bool, slope: f32) -> f32 {
    let step = |inside: bool, value: f32| if inside { value } else { 0.0 };
    match act {
        Activation::Identity => 1.0,
        Activation::Relu => step(v > 0.0, 1.0),
        Activation::Relu6 => step(v > 0.0 && v < 6.0, 1.0),
        Activation::Clamp { min, max } => step(v > min && v < max, 1.0),
        Activation::LeakyRelu { alpha } => {
            if v > 0.0 {
                1.0
            } else {
                alpha
            }
        }
        Activation::Prelu => {
            if v > 0.0 {
                1.0
            } else {
                slope
            }
        }
        Activation::HardSigmoid { alpha, beta } => {
            let y = if from_output { v } else { alpha * v + beta };
            step(y > 0.0 && y < 1.0, alpha)
        }
        Activation::Sigmoid => {
            let s = if from_output { v } else { 1.0 / (1.0 + (-v).exp()) };
            s * (1.0 - s)
        }
        Activation::Tanh => {
            let t = if from_output { v } else { v.tanh() };
            1.0 - t * t
        }
        Activation::HardSwish => {
            if v < -3.0 {
                0.0
            } else if v <= 3.0 {
                v / 3.0 + 0.5
            } else {
                1.0
            }
        }
        Activation::Silu => {
            let s = 1.0 / (1.0 + (-v).exp());
            s * (1.0 + v * (1.0 - s))
        }
        Activation::Gelu => {
            // Phi(z) + z phi(z).
            let density = (-0.5 * v * v).exp() * 0.398_942_3;
            normal_cdf(v) + v * density
        }
        Activation::GeluTanh => {
            let u = GELU_SQRT_2_OVER_PI * (v + GELU_CUBIC * v * v * v);
            let t = u.tanh();
            let du = GELU_SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * v * v);
            0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du
        }
    }
}

/// Writes (or adds) `product` (`[N, C, Ho, Wo]` or `[N, Ho, Wo, C]`: `W^T dz` at the output
/// pixels) into the input pixels they came from.
fn scatter_to_input(geom: &Geometry, product: &[f32], dx: &mut [f32], accumulate: Accumulate) {
    let cs = geom.input_channel_stride();
    for img in 0..geom.n {
        for q in 0..geom.p {
            let Some(base) = geom.input_offset(img, q / geom.wo, q % geom.wo) else {
                continue;
            };
            for c in 0..geom.c {
                let v = match geom.layout {
                    Layout::Nchw => product[(img * geom.c + c) * geom.p + q],
                    Layout::Nhwc => product[(img * geom.p + q) * geom.c + c],
                };
                accumulate.store(&mut dx[base + c * cs], v);
            }
        }
    }
}

/// Group `g`'s rows of `dz` as a dense `[K/G, N*Ho*Wo]` matrix: row runs copied in NCHW,
/// pixel by pixel (reading each pixel's channels in order) in NHWC.
fn gather_output_rows(geom: &Geometry, dz: &[f32], g: usize, rows: &mut [f32]) {
    let pixels = geom.n * geom.p;
    let k0 = g * geom.kg;
    match geom.layout {
        Layout::Nchw => {
            for kk in 0..geom.kg {
                for img in 0..geom.n {
                    let src = &dz[geom.output_offset(img, 0) + (k0 + kk) * geom.p..][..geom.p];
                    rows[kk * pixels + img * geom.p..][..geom.p].copy_from_slice(src);
                }
            }
        }
        Layout::Nhwc => {
            for img in 0..geom.n {
                for q in 0..geom.p {
                    let src = &dz[geom.output_offset(img, q) + k0..][..geom.kg];
                    for (kk, &v) in src.iter().enumerate() {
                        rows[kk * pixels + img * geom.p + q] = v;
                    }
                }
            }
        }
    }
}

/// Group `g`'s channels of `x` at the output pixels (through stride and padding; padded
/// pixels are 0) as a dense `[C/G, N*Ho*Wo]` matrix: channel row by channel row in NCHW
/// (row runs copied when the map is dense), pixel by pixel in NHWC.
fn gather_input_rows(geom: &Geometry, x: &[f32], g: usize, rows: &mut [f32]) {
    let pixels = geom.n * geom.p;
    let c0 = g * geom.cg;
    match geom.layout {
        Layout::Nchw if geom.is_dense() => {
            for cc in 0..geom.cg {
                for img in 0..geom.n {
                    let src = &x[(img * geom.c + c0 + cc) * geom.p..][..geom.p];
                    rows[cc * pixels + img * geom.p..][..geom.p].copy_from_slice(src);
                }
            }
        }
        Layout::Nchw => {
            let cs = geom.input_channel_stride();
            for cc in 0..geom.cg {
                for img in 0..geom.n {
                    let row = &mut rows[cc * pixels + img * geom.p..][..geom.p];
                    for (q, out) in row.iter_mut().enumerate() {
                        let base = geom.input_offset(img, q / geom.wo, q % geom.wo);
                        *out = base.map_or(0.0, |b| x[b + (c0 + cc) * cs]);
                    }
                }
            }
        }
        Layout::Nhwc => {
            for img in 0..geom.n {
                for q in 0..geom.p {
                    let base = geom.input_offset(img, q / geom.wo, q % geom.wo);
                    for cc in 0..geom.cg {
                        rows[cc * pixels + img * geom.p + q] = base.map_or(0.0, |b| x[b + c0 + cc]);
                    }
                }
            }
        }
    }
}
