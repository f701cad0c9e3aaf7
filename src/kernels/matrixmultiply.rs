//! The matrixmultiply kernel: the fallback for CPUs without a register-tiled tier, and the
//! baseline `compare` measures against. It runs the driver's units with the same packing
//! (a block of pixels gathered into one `cg x npix` matrix) and the same scalar epilogue as
//! the reference loop, with `matrixmultiply::sgemm` for the product.
use crate::conv::Layout;
use crate::driver::{Job, TaskScratch};
use crate::kernels::portable::Portable;
use crate::packing::{pixel_offsets, PADDED};
use std::ops::Range;

/// The matrixmultiply kernel for a range of units: gather the block into a `cg x npix`
/// matrix, then one `sgemm` and the scalar epilogue. When the block's outputs form a strided
/// matrix in the output, have no padded pixel and the residual is not the output itself, the
/// product is written straight into the output and finished in place; otherwise it is staged
/// in scratch and scattered (padded pixels take the epilogue of a zero sum, so they never see
/// the weights, and an in-place residual is read before it is overwritten).
pub(crate) fn run_units(job: &Job, units: Range<usize>, scratch: &mut TaskScratch) {
    let g = &job.geom;
    let cg = g.cg;
    let ics = g.input_channel_stride();
    let ocs = g.output_channel_stride();
    let ep = job.scalar_epilogue();
    let residual_is_output = job.residual.0 == job.y.0.cast_const();
    for u in units {
        let unit = job.unit(u);
        let npix = unit.pixels.len();
        let kn = unit.channels.len();
        let chan0 = unit.group * g.kg + unit.channels.start;
        let buffers = scratch.buffers(npix * cg, npix, 0, 0);
        let (packed, offsets, out_scratch, out_pixel) =
            (buffers.packed, buffers.offsets, buffers.out, buffers.out_pixels);
        pixel_offsets(g, unit.pixels.start, offsets);
        // One panel as wide as the block: a row-major cg x npix matrix.
        job.x
            .pack_pixel_panels(Portable::TOKEN, offsets, unit.group * cg, cg, ics, npix, 0.0, packed);
        let w = &job.weights[chan0 * cg..(chan0 + kn) * cg];
        let padded = offsets.contains(&PADDED);
        // Pixels evenly spaced in the output: NHWC, or NCHW within one image.
        let (first, last) = (unit.pixels.start, unit.pixels.end - 1);
        let pixel_stride = match g.layout {
            Layout::Nhwc => Some(g.k),
            Layout::Nchw => (first / g.p == last / g.p).then_some(1),
        };
        let direct = pixel_stride.is_some() && !padded && !residual_is_output;
        let origin = job.out_offset(first, chan0);
        let (c, rs, cs) = if let (true, Some(stride)) = (direct, pixel_stride) {
            // SAFETY: `origin` is an element of the output.
            (unsafe { job.y.0.add(origin) }, ocs, stride)
        } else {
            if out_scratch.len() < kn * npix {
                out_scratch.resize(kn * npix, 0.0);
            }
            (out_scratch.as_mut_ptr(), npix, 1)
        };
        // SAFETY: C is kn x npix at strides (rs, cs): straight in the output (channels
        // chan0.. of the unit's pixels, which no other unit writes) or the scratch buffer;
        // `w` is kn x cg, `packed` cg x npix.
        unsafe {
            matrixmultiply::sgemm(
                kn,
                cg,
                npix,
                1.0,
                w.as_ptr(),
                cg as isize,
                1,
                packed.as_ptr(),
                npix as isize,
                1,
                0.0,
                c,
                rs as isize,
                cs as isize,
            );
        }
        let res = job.residual.0;
        if direct {
            // The product sits in the output: finish it in place, row by row.
            for r in 0..kn {
                let channel = ep.channel(chan0 + r);
                for l in 0..npix {
                    let at = origin + r * rs + l * cs;
                    // SAFETY: `at` is element (r, l) of the product, inside the output, whose
                    // shape the residual (a separate buffer here) has.
                    unsafe {
                        let r = (!res.is_null()).then(|| *res.add(at));
                        *job.y.0.add(at) = channel.finish(*job.y.0.add(at), r);
                    }
                }
            }
            continue;
        }
        // Output offset of each pixel of the unit (computed once: it divides by Ho * Wo).
        out_pixel.clear();
        out_pixel.extend((0..npix).map(|l| job.out_offset(first + l, 0)));
        for r in 0..kn {
            let chan = chan0 + r;
            let channel = ep.channel(chan);
            for (l, (&pixel, &offset)) in out_pixel.iter().zip(offsets.iter()).enumerate() {
                let at = pixel + chan * ocs;
                // SAFETY: `at` is an element of this unit's part of the output, whose shape
                // the residual has; `c` holds the product at (r, l); the residual element is
                // read before the output element is written (they may be the same element).
                unsafe {
                    let acc = if offset == PADDED { 0.0 } else { *c.add(r * rs + l * cs) };
                    let r = (!res.is_null()).then(|| *res.add(at));
                    *job.y.0.add(at) = channel.finish(acc, r);
                }
            }
        }
    }
}
