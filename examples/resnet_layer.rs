//! The usage example: runs the seed example and one ResNet-50 layer, checks both against a
//! plain f64 computation, and prints the results and the kernel used. (The main job, every
//! kernel over the layer suite, is `cargo run --release --example compare`.)
use pointwise::{auto_kernel, available_kernels, Activation, Conv1x1, InputDims, Plan, PlanOptions, Workspace};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let names: Vec<&str> = available_kernels().iter().map(|k| k.name()).collect();
    println!(
        "kernels on this CPU: {}; auto picks: {}",
        names.join(", "),
        auto_kernel()
    );
    let options = PlanOptions::from_env()?;
    let mut ws = Workspace::new();

    // The seed example: a 3x3 image, 3 channels holding 1..=27, two output channels.
    let x: Vec<f32> = (1..=27).map(|v| v as f32).collect();
    let w = [1.0f32, 2.0, 3.0, 0.5, 0.0, -1.0];
    for stride in [1, 2] {
        let conv = Conv1x1::new(3, 2).with_stride(stride, stride);
        let plan = Plan::new(&conv, &w, None, options)?;
        let dims = InputDims::new(1, 3, 3);
        let out = plan.output_dims(dims)?;
        let mut y = vec![0.0; out.len()?];
        plan.forward(&x, dims, None, &mut y, &mut ws)?;
        println!(
            "seed example, stride {stride} ({} kernel): output {}x{}x{}",
            plan.kernel(),
            out.k,
            out.h,
            out.w
        );
        for k in 0..2 {
            let plane = &y[k * out.h * out.w..(k + 1) * out.h * out.w];
            println!("  kernel {}: {plane:?}", k + 1);
        }
        assert_eq!(y[0], w[0] * 1.0 + w[1] * 10.0 + w[2] * 19.0);
    }

    // ResNet-50 conv2_x expansion: 64 -> 256 on 56x56, bias, residual, ReLU.
    let (c, k, h) = (64usize, 256usize, 56usize);
    let conv = Conv1x1::new(c, k).with_activation(Activation::Relu);
    let w: Vec<f32> = (0..c * k).map(|i| ((i * 7919) % 17) as f32 / 17.0 - 0.5).collect();
    let bias: Vec<f32> = (0..k).map(|i| (i % 5) as f32 * 0.1).collect();
    let x: Vec<f32> = (0..c * h * h)
        .map(|i| ((i * 104729) % 23) as f32 / 23.0 - 0.5)
        .collect();
    let residual: Vec<f32> = (0..k * h * h).map(|i| ((i * 31) % 7) as f32 * 0.05).collect();
    let plan = Plan::new(&conv, &w, Some(&bias), options)?;
    let dims = InputDims::new(1, h, h);
    let mut y = vec![0.0; plan.output_dims(dims)?.len()?];
    plan.forward(&x, dims, Some(&residual), &mut y, &mut ws)?;
    let reps = 20;
    let start = Instant::now();
    for _ in 0..reps {
        plan.forward(&x, dims, Some(&residual), &mut y, &mut ws)?;
    }
    let secs = start.elapsed().as_secs_f64() / reps as f64;
    let mut max_err = 0.0f64;
    for kk in 0..k {
        for p in (0..h * h).step_by(97) {
            let mut z = bias[kk] as f64 + residual[kk * h * h + p] as f64;
            for cc in 0..c {
                z += w[kk * c + cc] as f64 * x[cc * h * h + p] as f64;
            }
            max_err = max_err.max((y[kk * h * h + p] as f64 - z.max(0.0)).abs());
        }
    }
    let gflops = 2.0 * (c * k * h * h) as f64 / secs / 1e9;
    println!(
        "ResNet-50 64->256 56x56 + bias + residual + ReLU ({} kernel): {:.3} ms, {gflops:.1} GFLOP/s, max abs error vs f64 {max_err:.2e}",
        plan.kernel(),
        secs * 1e3
    );
    if max_err > 1e-4 {
        return Err("result does not match the f64 reference".into());
    }
    Ok(())
}
