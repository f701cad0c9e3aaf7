//! ShuffleNet's channel shuffle, the companion of grouped 1x1 convolutions.
use crate::conv::{InputDims, Layout};
use crate::error::{checked_product, Error, Result};

/// Channel shuffle: views the `channels` as a `groups x (channels / groups)` matrix and
/// transposes it, so output channel `i * groups + j` is input channel `j * (channels/groups) + i`.
/// Shuffling by `g` and then by `channels / g` restores the input.
///
/// # Shapes
/// `input` and `output`: `[n, channels, h, w]` (NCHW) or `[n, h, w, channels]` (NHWC).
///
/// # Errors
/// [`Error::InvalidShuffle`] when `groups` is 0 or does not divide `channels`;
/// [`Error::LengthMismatch`] for either slice; [`Error::SizeOverflow`]. On error `output` is
/// untouched.
///
/// # Example
/// ```
/// use pointwise::{channel_shuffle, InputDims, Layout};
/// let x = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]; // 6 channels of a 1x1 image
/// let mut y = [0.0; 6];
/// channel_shuffle(&x, &mut y, InputDims::new(1, 1, 1), 6, 2, Layout::Nchw).unwrap();
/// assert_eq!(y, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
/// ```
pub fn channel_shuffle(
    input: &[f32],
    output: &mut [f32],
    dims: InputDims,
    channels: usize,
    groups: usize,
    layout: Layout,
) -> Result<()> {
    if groups == 0 || channels == 0 || !channels.is_multiple_of(groups) {
        return Err(Error::InvalidShuffle { groups, channels });
    }
    let len = checked_product(&[dims.n, channels, dims.h, dims.w], "shuffle length")?;
    if input.len() != len {
        return Err(Error::LengthMismatch {
            what: "input",
            expected: len,
            got: input.len(),
        });
    }
    if output.len() != len {
        return Err(Error::LengthMismatch {
            what: "output",
            expected: len,
            got: output.len(),
        });
    }
    if len == 0 {
        return Ok(());
    }
    let per_group = channels / groups;
    let hw = dims.h * dims.w;
    let source = |c_out: usize| (c_out % groups) * per_group + c_out / groups;
    match layout {
        Layout::Nchw => {
            for (img_out, img_in) in output
                .chunks_exact_mut(channels * hw)
                .zip(input.chunks_exact(channels * hw))
            {
                for (c_out, plane) in img_out.chunks_exact_mut(hw).enumerate() {
                    let c_in = source(c_out);
                    plane.copy_from_slice(&img_in[c_in * hw..(c_in + 1) * hw]);
                }
            }
        }
        Layout::Nhwc => {
            for (px_out, px_in) in output.chunks_exact_mut(channels).zip(input.chunks_exact(channels)) {
                for (c_out, v) in px_out.iter_mut().enumerate() {
                    *v = px_in[source(c_out)];
                }
            }
        }
    }
    Ok(())
}
