//! Fuzz inputs for pointwise, shared by the targets (`fuzz_targets/`) and the seed generator
//! (`src/bin/gen_seeds.rs`).
//!
//! Each input is a flat struct of integers decoded by `arbitrary`'s derive: fields in order,
//! integers little-endian, `bool` the low bit of a byte, missing bytes read as zero. That
//! makes inputs short and lets [`Encode`] write seeds field by field; the generator checks
//! that every seed decodes back to the value it encoded.
use arbitrary::Arbitrary;
use pointwise::{Activation, Conv1x1, InputDims, KernelChoice, KernelId, Layout, Padding, Threads};

/// Most elements the `api` target allocates for one slice (4 MiB of f32).
pub const MAX_ELEMS: usize = 1 << 20;
/// Most multiply-adds the `api` target lets one `forward` call run; larger valid calls are
/// only made with a wrong output length (the error path).
pub const MAX_MACS: usize = 1 << 24;

/// Field-by-field little-endian encoding, the inverse of the derived `Arbitrary` decoding.
pub trait Encode {
    fn encode(&self, out: &mut Vec<u8>);
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

macro_rules! encode_ints {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
encode_ints!(u8, u16, u32, u64, i16);

impl Encode for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl<T: Encode, const N: usize> Encode for [T; N] {
    fn encode(&self, out: &mut Vec<u8>) {
        for v in self {
            v.encode(out);
        }
    }
}

macro_rules! encode_struct {
    ($name:ident { $($field:ident),* $(,)? }) => {
        impl Encode for $name {
            fn encode(&self, out: &mut Vec<u8>) {
                // Destructuring makes a field missing here a compile error.
                let $name { $($field),* } = self;
                $($field.encode(out);)*
            }
        }
    };
}

/// A length given relative to the one the shapes imply: `0` is that length, `d` is that length
/// plus `d` (at least 0, at most [`MAX_ELEMS`]); when the implied length is not computable or
/// over the cap, `|d|` is used as is (so the call must fail). `i16::MIN` means "no slice" for
/// the optional ones (bias, residual).
pub fn slice_len(implied: Option<usize>, delta: i16) -> usize {
    match implied {
        Some(len) if len <= MAX_ELEMS => len.saturating_add_signed(isize::from(delta)).min(MAX_ELEMS),
        _ => usize::from(delta.unsigned_abs()),
    }
}

/// The kernel choice a selector byte names: 0 is Auto, `1..=6` force `KernelId::ALL[i - 1]`
/// (available or not), anything else is Auto.
pub fn kernel_choice(sel: u8) -> KernelChoice {
    match sel {
        1..=6 => KernelChoice::Force(KernelId::ALL[usize::from(sel) - 1]),
        _ => KernelChoice::Auto,
    }
}

/// How many activations the selectors reach.
pub const ACTIVATIONS: u8 = 13;

/// Every activation from a selector, with parameters from two raw `f32` bit patterns (so NaN,
/// infinities, `min > max` and every other invalid parameter are reachable).
pub fn raw_activation(sel: u8, a: u32, b: u32) -> Activation {
    let (a, b) = (f32::from_bits(a), f32::from_bits(b));
    match sel % ACTIVATIONS {
        0 => Activation::Identity,
        1 => Activation::Relu,
        2 => Activation::Relu6,
        3 => Activation::Clamp { min: a, max: b },
        4 => Activation::LeakyRelu { alpha: a },
        5 => Activation::HardSwish,
        6 => Activation::Silu,
        7 => Activation::Gelu,
        8 => Activation::Prelu,
        9 => Activation::HardSigmoid { alpha: a, beta: b },
        10 => Activation::Sigmoid,
        11 => Activation::Tanh,
        _ => Activation::GeluTanh,
    }
}

/// `api`: any descriptor, any dimensions, any slice lengths, any kernel, tiling and thread
/// choice. Dimensions are raw `u32`; bit `i` of `huge` turns field `i` of
/// `[in, out, groups, sh, sw, top, bottom, left, right, n, h, w]` into `usize::MAX - value`.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCase {
    pub in_channels: u32,
    pub out_channels: u32,
    pub groups: u32,
    pub stride: [u32; 2],
    /// `% 4`: Valid, SameUpper, SameLower, Explicit(`pad`).
    pub padding: u8,
    /// `(top, bottom, left, right)`.
    pub pad: [u32; 4],
    pub nhwc: bool,
    pub activation: u8,
    /// Activation parameters as `f32` bits (Clamp `min`, `max`; LeakyRelu `alpha`).
    pub act_bits: [u32; 2],
    pub huge: u16,
    pub kernel: u8,
    /// `% 6`: Single, Count(0), Count(1), Count(2), Count(3), Rayon.
    pub threads: u8,
    /// 0: the plan's own tiling; `t > 0`: `force_tile` of tile `(t - 1) / 2` of the kernel's
    /// list (a name no tile has past its end), folded when `(t - 1) % 2 == 1`.
    pub tiling: u8,
    pub n: u32,
    pub h: u32,
    pub w: u32,
    /// Lengths relative to the implied ones (see [`slice_len`]).
    pub weights_len: i16,
    pub bias_len: i16,
    pub input_len: i16,
    pub residual_len: i16,
    pub output_len: i16,
    /// Non-finite or extreme values written into the input: `% 6` none, NaN, +inf, -inf,
    /// `f32::MAX`, the smallest denormal; at index `special_at % len`.
    pub special: u8,
    pub special_at: u32,
    /// A kernel name for `KernelId::from_name`.
    pub name: [u8; 8],
    pub seed: u32,
    /// Group count for `channel_shuffle` of the input.
    pub shuffle_groups: u32,
    /// PReLU slopes: 0 none, `d != 0` a slice of `slice_len(K, d - 1)` values.
    pub slope_len: i16,
    /// Weights given as `[C/G, K]` (`WeightOrder::InputMajor`).
    pub input_major: bool,
    /// `forward_residual_in_place` (the output buffer is the residual) instead of `forward`.
    /// (The last field is a scalar: `arbitrary` decodes a trailing array's last element from
    /// the rest of the input.)
    pub in_place: bool,
}

encode_struct!(ApiCase {
    in_channels,
    out_channels,
    groups,
    stride,
    padding,
    pad,
    nhwc,
    activation,
    act_bits,
    huge,
    kernel,
    threads,
    tiling,
    n,
    h,
    w,
    weights_len,
    bias_len,
    input_len,
    residual_len,
    output_len,
    special,
    special_at,
    name,
    seed,
    shuffle_groups,
    slope_len,
    input_major,
    in_place
});

impl ApiCase {
    fn dim(&self, index: u32, v: u32) -> usize {
        if self.huge & (1 << index) != 0 {
            usize::MAX - v as usize
        } else {
            v as usize
        }
    }

    pub fn conv(&self) -> Conv1x1 {
        let [top, bottom, left, right] = [5, 6, 7, 8].map(|i| self.dim(i, self.pad[i as usize - 5]));
        let padding = match self.padding % 4 {
            0 => Padding::Valid,
            1 => Padding::SameUpper,
            2 => Padding::SameLower,
            _ => Padding::Explicit {
                top,
                bottom,
                left,
                right,
            },
        };
        Conv1x1::new(self.dim(0, self.in_channels), self.dim(1, self.out_channels))
            .with_groups(self.dim(2, self.groups))
            .with_stride(self.dim(3, self.stride[0]), self.dim(4, self.stride[1]))
            .with_padding(padding)
            .with_layout(if self.nhwc { Layout::Nhwc } else { Layout::Nchw })
            .with_activation(raw_activation(self.activation, self.act_bits[0], self.act_bits[1]))
    }

    pub fn dims(&self) -> InputDims {
        InputDims::new(self.dim(9, self.n), self.dim(10, self.h), self.dim(11, self.w))
    }

    /// Never more than one thread of a dedicated pool: pools of several threads are torn down
    /// asynchronously by rayon after the plan drops them, and LeakSanitizer reports the deques
    /// of workers still shutting down. Multi-threaded runs use rayon's global pool.
    pub fn threads(&self) -> Threads {
        match self.threads % 6 {
            0 => Threads::Single,
            1 => Threads::Count(0),
            2 => Threads::Count(1),
            // rayon's global pool; see differential.rs on why not a dedicated one per case.
            3 => Threads::Rayon,
            4 => Threads::Count(1),
            _ => Threads::Rayon,
        }
    }

    pub fn tiling(&self) -> Option<(usize, bool)> {
        match self.tiling {
            0 => None,
            t => Some((usize::from((t - 1) / 2), (t - 1) % 2 == 1)),
        }
    }

    /// The PReLU slope count, when slopes are given.
    pub fn slope_count(&self, k: usize) -> Option<usize> {
        match self.slope_len {
            0 => None,
            d => Some(slice_len(Some(k), d.saturating_sub(1))),
        }
    }

    pub fn special_value(&self) -> Option<f32> {
        match self.special % 6 {
            0 => None,
            1 => Some(f32::NAN),
            2 => Some(f32::INFINITY),
            3 => Some(f32::NEG_INFINITY),
            4 => Some(f32::MAX),
            _ => Some(f32::from_bits(1)),
        }
    }
}

/// Largest channel count of a `differential` problem.
pub const DIFF_MAX_CHANNELS: usize = 96;
/// Largest input height and width of a `differential` problem.
pub const DIFF_MAX_HW: usize = 17;
/// Largest batch of a `differential` problem.
pub const DIFF_MAX_N: usize = 4;

/// `differential`: a small valid problem (N <= 4, C and K <= 96, H and W <= 17, strides 1..=3,
/// padding 0..=2 per border or SAME/VALID, groups dividing C and K, any activation with valid
/// parameters, bias and residual on or off, the residual separate or in the output) to run on
/// every kernel.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffCase {
    /// `% (DIFF_MAX_N + 1)`: 0 (empty) to 4.
    pub n: u8,
    /// `% DIFF_MAX_CHANNELS + 1`.
    pub groups: u8,
    /// `C / G`, `% (96 / G) + 1`.
    pub cg: u8,
    /// `K / G`, `% (96 / G) + 1`.
    pub kg: u8,
    /// `% 18`: 0 (empty) to 17.
    pub h: u8,
    pub w: u8,
    /// Low two bits: `sh - 1` (`% 3`), next two: `sw - 1`.
    pub stride: u8,
    /// `% 4`: Valid, SameUpper, SameLower, Explicit(`pads`).
    pub padding: u8,
    /// Two bits per border (`% 3`): top, bottom, left, right.
    pub pads: u8,
    pub nhwc: bool,
    pub activation: u8,
    /// Clamp bounds (`min = -(p % 16) / 2`, `max = min + (q % 16) / 2`) or LeakyRelu slope
    /// (`p as i8 / 16`): exact in f32 on integer data.
    pub act_param: [u8; 2],
    pub bias: bool,
    pub residual: bool,
    /// Small integers (every kernel bit-exact for the piecewise-linear activations) or reals.
    pub exact: bool,
    /// 0: the plan's own tiling; `t > 0`: on SIMD kernels also `force_tile` of the tile with
    /// `tile = (t - 1) / 2 % tiles`, `fold = (t - 1) % 2 == 1`.
    pub tiling: u8,
    /// Odd: also run with `Threads::Count(2)`.
    pub threads: u8,
    pub seed: u64,
    /// With a residual: also run `forward_residual_in_place` (the output buffer holds the
    /// residual) and require the same bits as `forward`.
    pub in_place: bool,
}

encode_struct!(DiffCase {
    n,
    groups,
    cg,
    kg,
    h,
    w,
    stride,
    padding,
    pads,
    nhwc,
    activation,
    act_param,
    bias,
    residual,
    exact,
    tiling,
    threads,
    seed,
    in_place
});

impl DiffCase {
    pub fn conv(&self) -> Conv1x1 {
        let g = usize::from(self.groups) % DIFF_MAX_CHANNELS + 1;
        let per = DIFF_MAX_CHANNELS / g;
        let cg = usize::from(self.cg) % per + 1;
        let kg = usize::from(self.kg) % per + 1;
        let sh = usize::from(self.stride & 3) % 3 + 1;
        let sw = usize::from((self.stride >> 2) & 3) % 3 + 1;
        let p = |shift: u8| usize::from((self.pads >> shift) & 3) % 3;
        let padding = match self.padding % 4 {
            0 => Padding::Valid,
            1 => Padding::SameUpper,
            2 => Padding::SameLower,
            _ => Padding::Explicit {
                top: p(0),
                bottom: p(2),
                left: p(4),
                right: p(6),
            },
        };
        let [a, b] = self.act_param;
        let min = -f32::from(a % 16) / 2.0;
        let activation = match self.activation % ACTIVATIONS {
            3 => Activation::Clamp {
                min,
                max: min + f32::from(b % 16) / 2.0,
            },
            4 => Activation::LeakyRelu {
                alpha: f32::from(a as i8) / 16.0,
            },
            9 => Activation::HardSigmoid {
                alpha: f32::from(a as i8) / 16.0,
                beta: f32::from(b % 16) / 8.0,
            },
            // The parameterless ones (PReLU's slopes come with the test problem).
            sel => raw_activation(sel, 0, 0),
        };
        Conv1x1::new(g * cg, g * kg)
            .with_groups(g)
            .with_stride(sh, sw)
            .with_padding(padding)
            .with_layout(if self.nhwc { Layout::Nhwc } else { Layout::Nchw })
            .with_activation(activation)
    }

    pub fn dims(&self) -> InputDims {
        InputDims::new(
            usize::from(self.n) % (DIFF_MAX_N + 1),
            usize::from(self.h) % (DIFF_MAX_HW + 1),
            usize::from(self.w) % (DIFF_MAX_HW + 1),
        )
    }

    pub fn tiling(&self, tiles: usize) -> Option<(usize, bool)> {
        match self.tiling {
            0 => None,
            _ if tiles == 0 => None,
            t => Some((usize::from((t - 1) / 2) % tiles, (t - 1) % 2 == 1)),
        }
    }
}
