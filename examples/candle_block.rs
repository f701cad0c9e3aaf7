//! pointwise inside candle (feature `candle`): a MobileNetV2 inverted-residual block run with
//! candle's own `conv2d` and with pointwise's op for its two 1x1 convolutions, then every layer
//! of `compare`'s suite, candle's `conv2d` (plus its bias add) against the op, in the same run.
//!
//! ```sh
//! cargo run --release --features candle --example candle_block            # candle's threads
//! RAYON_NUM_THREADS=1 cargo run --release --features candle --example candle_block
//! ```
//! Both sides run on rayon's global pool (`Threads::Rayon` for pointwise), so they get the same
//! threads. Times are medians; the max difference is over every output. The suite table also
//! shows the same plan through the plain API into a buffer allocated once ("plain"): the gap
//! between it and the op is candle's part (a fresh output tensor per call, the op dispatch).
use std::time::{Duration, Instant};

use candle_core::{Device, Module, Tensor};
use pointwise::interop::candle::{Conv1x1Config, PointwiseConv2d};
use pointwise::{Activation, PlanOptions, Threads};

#[allow(dead_code)]
#[path = "compare/suite.rs"]
mod suite;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Median seconds per call of `f`, over calls for about `budget`.
fn median_seconds(budget: Duration, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 5 || (start.elapsed() < budget && times.len() < 1000) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn max_abs_difference(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// Standard normal values times `scale`.
fn random(shape: &[usize], scale: f64, dev: &Device) -> Result<Tensor> {
    Ok((Tensor::randn(0f32, 1f32, shape, dev)? * scale)?)
}

/// The block's parameters: expand 1x1 (+ReLU6), depthwise 3x3 (+ReLU6), project 1x1, residual.
struct InvertedResidual {
    expand_w: Tensor,
    expand_b: Tensor,
    depthwise_w: Tensor,
    depthwise_b: Tensor,
    project_w: Tensor,
    project_b: Tensor,
}

impl InvertedResidual {
    fn new(channels: usize, expansion: usize, dev: &Device) -> Result<Self> {
        let hidden = channels * expansion;
        Ok(InvertedResidual {
            expand_w: random(&[hidden, channels, 1, 1], (1.0 / channels as f64).sqrt(), dev)?,
            expand_b: random(&[hidden], 0.1, dev)?,
            depthwise_w: random(&[hidden, 1, 3, 3], 1.0 / 3.0, dev)?,
            depthwise_b: random(&[hidden], 0.1, dev)?,
            project_w: random(&[channels, hidden, 1, 1], (1.0 / hidden as f64).sqrt(), dev)?,
            project_b: random(&[channels], 0.1, dev)?,
        })
    }

    fn depthwise(&self, h: &Tensor) -> Result<Tensor> {
        let hidden = self.depthwise_b.dim(0)?;
        let h = h.conv2d(&self.depthwise_w, 1, 1, 1, hidden)?;
        Ok(h.broadcast_add(&self.depthwise_b.reshape((1, hidden, 1, 1))?)?
            .clamp(0f32, 6f32)?)
    }

    /// The block with candle's `conv2d` everywhere.
    fn forward_candle(&self, x: &Tensor) -> Result<Tensor> {
        let bias = |b: &Tensor| b.reshape((1, b.dim(0)?, 1, 1));
        let h = x
            .conv2d(&self.expand_w, 0, 1, 1, 1)?
            .broadcast_add(&bias(&self.expand_b)?)?
            .clamp(0f32, 6f32)?;
        let h = self.depthwise(&h)?;
        let y = h
            .conv2d(&self.project_w, 0, 1, 1, 1)?
            .broadcast_add(&bias(&self.project_b)?)?;
        Ok((y + x)?)
    }
}

/// The same block with its 1x1 convolutions as pointwise modules (weights packed once, bias
/// and ReLU6 fused).
struct PointwiseInvertedResidual<'a> {
    block: &'a InvertedResidual,
    expand: PointwiseConv2d,
    project: PointwiseConv2d,
}

impl<'a> PointwiseInvertedResidual<'a> {
    fn new(block: &'a InvertedResidual, options: PlanOptions) -> Result<Self> {
        let config = Conv1x1Config::default().with_options(options);
        Ok(PointwiseInvertedResidual {
            block,
            expand: PointwiseConv2d::new(
                block.expand_w.clone(),
                Some(block.expand_b.clone()),
                config.with_activation(Activation::Relu6),
            )?,
            project: PointwiseConv2d::new(block.project_w.clone(), Some(block.project_b.clone()), config)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.expand.forward(x)?;
        let h = self.block.depthwise(&h)?;
        Ok((self.project.forward(&h)? + x)?)
    }
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let options = PlanOptions::from_env()?.with_threads(Threads::Rayon);
    let budget = Duration::from_millis(if std::env::args().any(|a| a == "--quick") {
        150
    } else {
        500
    });
    println!(
        "candle {} threads (rayon's global pool, shared by both sides)",
        candle_core::utils::get_num_threads()
    );

    println!("\nMobileNetV2 inverted residual block (expand x6, depthwise 3x3, project, residual), batch 1:");
    println!(
        "{:<28}{:>12}{:>12}{:>10}{:>16}",
        "block", "candle ms", "op ms", "speedup", "max |diff|"
    );
    for (channels, size) in [(24, 56), (32, 28), (64, 14), (96, 14), (160, 7)] {
        let block = InvertedResidual::new(channels, 6, &dev)?;
        let with_op = PointwiseInvertedResidual::new(&block, options)?;
        let x = random(&[1, channels, size, size], 1.0, &dev)?;
        let diff = max_abs_difference(&block.forward_candle(&x)?, &with_op.forward(&x)?)?;
        let t_candle = median_seconds(budget, || block.forward_candle(&x).map(drop))?;
        let t_op = median_seconds(budget, || with_op.forward(&x).map(drop))?;
        println!(
            "{:<28}{:>12.3}{:>12.3}{:>9.2}x{:>16.2e}",
            format!("{channels}->{}->{channels} {size}x{size}", channels * 6),
            t_candle * 1e3,
            t_op * 1e3,
            t_candle / t_op,
            diff
        );
    }

    println!("\ncompare's suite, one 1x1 layer each (NCHW, f32): candle conv2d + bias add against the op");
    println!(
        "{:<32}{:>14}{:>14}{:>14}{:>10}{:>14}  op tile",
        "layer", "candle GF/s", "op GF/s", "plain GF/s", "speedup", "max |diff|"
    );
    for layer in suite::default_suite() {
        let cg = layer.c / layer.groups;
        let w = random(&[layer.k, cg, 1, 1], (1.0 / cg as f64).sqrt(), &dev)?;
        let b = random(&[layer.k], 0.1, &dev)?;
        let x = random(&[layer.n, layer.c, layer.h, layer.w], 1.0, &dev)?;
        let config = Conv1x1Config::default()
            .with_stride(layer.stride)
            .with_padding(layer.pad)
            .with_groups(layer.groups)
            .with_options(options);
        let op = PointwiseConv2d::new(w.clone(), Some(b.clone()), config)?;
        let candle = |x: &Tensor| -> Result<Tensor> {
            let y = x.conv2d(&w, layer.pad, layer.stride, 1, layer.groups)?;
            Ok(y.broadcast_add(&b.reshape((1, layer.k, 1, 1))?)?)
        };
        let diff = max_abs_difference(&candle(&x)?, &op.forward(&x)?)?;
        let t_candle = median_seconds(budget, || candle(&x).map(drop))?;
        let t_op = median_seconds(budget, || op.forward(&x).map(drop).map_err(Into::into))?;
        // The same plan through the plain API into a buffer allocated once: the op's cost over
        // it is candle's (the output tensor, the op dispatch).
        let x_values = x.flatten_all()?.to_vec1::<f32>()?;
        let mut y_plain = vec![0.0f32; op.plan().output_len(layer.dims())?];
        let mut ws = pointwise::Workspace::new();
        let t_plain = median_seconds(budget, || {
            op.plan()
                .forward(&x_values, layer.dims(), None, &mut y_plain, &mut ws)
                .map_err(Into::into)
        })?;
        let gflops = |t: f64| layer.flops() / t * 1e-9;
        let tile = op.plan().tile_for(layer.dims())?.unwrap_or("-");
        println!(
            "{:<32}{:>14.1}{:>14.1}{:>14.1}{:>9.2}x{:>14.2e}  {}",
            layer.name,
            gflops(t_candle),
            gflops(t_op),
            gflops(t_plain),
            t_candle / t_op,
            diff,
            tile
        );
    }
    Ok(())
}
