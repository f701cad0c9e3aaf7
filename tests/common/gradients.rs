//! The backward passes' test case and its f64 reference, written from the definitions
//! (shared by `tests/backward.rs` and the `backward` fuzz target).
use pointwise::{Accumulate, BackwardPlan, Conv1x1, InputDims, Layout, PlanOptions, Workspace};
use rand::{Rng, SeedableRng};

/// One convolution and its tensors: `x`, `w`, and an upstream gradient `dz`.
pub struct GradCase {
    pub conv: Conv1x1,
    pub dims: InputDims,
    pub x: Vec<f32>,
    pub w: Vec<f32>,
    pub dz: Vec<f32>,
}

impl GradCase {
    pub fn new(conv: Conv1x1, dims: InputDims, integers: bool, seed: u64) -> GradCase {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut draw = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    if integers {
                        rng.random_range(-3i32..=3) as f32
                    } else {
                        rng.random_range(-1.0f32..1.0)
                    }
                })
                .collect()
        };
        let x = draw(conv.input_len(dims).unwrap());
        let w = draw(conv.weights_len().unwrap());
        let dz = draw(conv.output_dims(dims).unwrap().len().unwrap());
        GradCase { conv, dims, x, w, dz }
    }

    /// `(input offset of channel 0, output offset of channel 0)` for every output pixel that
    /// reads an input pixel, and the channel strides of input and output.
    pub fn pixel_pairs(&self) -> (Vec<(usize, usize)>, usize, usize) {
        let c = &self.conv;
        let out = c.output_dims(self.dims).unwrap();
        let (h, w) = (self.dims.h, self.dims.w);
        let (top, _, left, _) = c.padding.borders();
        let mut pairs = Vec::new();
        for img in 0..self.dims.n {
            for oy in 0..out.h {
                for ox in 0..out.w {
                    let (iy, ix) = (
                        (oy * c.stride.0) as isize - top as isize,
                        (ox * c.stride.1) as isize - left as isize,
                    );
                    if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                        continue;
                    }
                    let (ip, op) = (iy as usize * w + ix as usize, oy * out.w + ox);
                    pairs.push(match c.layout {
                        Layout::Nchw => (img * c.in_channels * h * w + ip, img * out.k * out.h * out.w + op),
                        _ => ((img * h * w + ip) * c.in_channels, (img * out.h * out.w + op) * out.k),
                    });
                }
            }
        }
        let (cs, ks) = match c.layout {
            Layout::Nchw => (h * w, out.h * out.w),
            _ => (1, 1),
        };
        (pairs, cs, ks)
    }

    /// f64 `(dx, dw, db)` and, for each, the sum of |terms| (the error scale).
    #[allow(clippy::type_complexity)]
    pub fn reference(&self) -> ((Vec<f64>, Vec<f64>), (Vec<f64>, Vec<f64>), Vec<f64>) {
        let c = &self.conv;
        let (kg, cg) = (c.out_channels / c.groups, c.in_channels / c.groups);
        let (pairs, cs, ks) = self.pixel_pairs();
        let mut dx = (vec![0.0; self.x.len()], vec![0.0; self.x.len()]);
        let mut dw = (vec![0.0; self.w.len()], vec![0.0; self.w.len()]);
        let mut db = vec![0.0; c.out_channels];
        for &(ib, ob) in &pairs {
            for k in 0..c.out_channels {
                let g = k / kg;
                let d = self.dz[ob + k * ks] as f64;
                for cc in 0..cg {
                    let ch = g * cg + cc;
                    let wv = self.w[k * cg + cc] as f64;
                    let xv = self.x[ib + ch * cs] as f64;
                    dx.0[ib + ch * cs] += wv * d;
                    dx.1[ib + ch * cs] += (wv * d).abs();
                    dw.0[k * cg + cc] += d * xv;
                    dw.1[k * cg + cc] += (d * xv).abs();
                }
            }
        }
        let out = c.output_dims(self.dims).unwrap();
        let p = out.h * out.w;
        for (i, &d) in self.dz.iter().enumerate() {
            db[channel_of(c.layout, i, p, out.k)] += d as f64;
        }
        (dx, dw, db)
    }

    pub fn run(&self, options: PlanOptions, accumulate: Accumulate, start: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let plan = BackwardPlan::new(&self.conv, &self.w, options).unwrap();
        let mut ws = Workspace::new();
        let mut dx = vec![start; self.x.len()];
        let mut dw = vec![start; self.w.len()];
        let mut db = vec![start; self.conv.out_channels];
        plan.data(&self.dz, self.dims, &mut dx, accumulate, &mut ws).unwrap();
        plan.weights(&self.x, &self.dz, self.dims, &mut dw, accumulate, &mut ws)
            .unwrap();
        plan.bias(&self.dz, self.dims, &mut db, accumulate).unwrap();
        (dx, dw, db)
    }
}

/// The output channel of element `i` of an output with `p` pixels per image and `k` channels.
pub fn channel_of(layout: Layout, i: usize, p: usize, k: usize) -> usize {
    match layout {
        Layout::Nchw => (i / p) % k,
        _ => i % k,
    }
}
