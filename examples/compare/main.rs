//! `compare`: every pointwise kernel on this CPU, side by side, verified against f64, with the
//! machine's measured limits as the yardstick. The README's main job.
//!
//! Run `cargo run --release --example compare -- --help` for the options.
mod machine;
mod report;
mod suite;

use pointwise::{auto_kernel, available_kernels, compiled_target_features, Activation, KernelId, Layout, Threads};
use report::Row;
use std::io::Write;
use suite::Layer;

const HELP: &str = "\
compare: runs every pointwise kernel available on this CPU over a suite of 1x1 layers,
checks each result against an f64 reference, and reports GFLOP/s side by side.

USAGE: cargo run --release --example compare -- [OPTIONS]

OPTIONS:
  --threads N|all     threads per forward call (default 1; `all` = every core)
  --layers A,B,...    only suite layers whose name contains one of these substrings
  --kernels A,B,...   only these kernels (avx512, avx2, neon, portable, matrixmultiply;
                      `auto` = the one Auto picks on this CPU)
  --layer n,c,k,h,w[,stride[,pad[,groups]]]
                      a custom layer instead of the suite (repeatable)
  --layout nchw|nhwc  memory layout (default nchw)
  --activation NAME   fuse this activation into every layer (default identity): identity,
                      relu, relu6, clamp, leaky_relu, prelu, hardswish, hardsigmoid, sigmoid,
                      tanh, silu, gelu, gelu_tanh; checked against its f64 formula
  --quick             short timings (for CI); numbers are noisier
  --format table|csv|json
                      stdout format (default table); the header goes to stderr for csv/json
  --plot FILE.svg     also draw a grouped bar chart: GFLOP/s per layer, a bar per kernel,
                      each tier's FMA peak as a horizontal line
  --help              this text

READING THE NUMBERS:
  GFLOP/s   = 2*K*(C/groups)*Ho*Wo*N / median time of one forward call.
  % peak    = GFLOP/s / the single-core FMA peak of the kernel's tier, measured at start
              (basis fma:<tier>), times the thread count; matrixmultiply and portable are
              measured against the widest tier they can use. Memory-bound layers (basis
              bandwidth) instead give the time a pure read of their input, weights and output
              at the measured memory bandwidth would take, as a % of the measured time.
  vs mm     = speedup over the matrixmultiply kernel in the same run.
  max rel   = max |y - ref| / (sum|w*x| + |b|) over sampled outputs; a kernel whose error
              exceeds 2*gamma(C/groups + 1) on any output (times the activation's Lipschitz
              constant, plus its stated error) is FAIL, and compare exits 1.
";

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub threads: usize,
    pub layer_filter: Vec<String>,
    pub kernels: Vec<KernelId>,
    pub custom: Vec<Layer>,
    pub layout: Layout,
    pub activation: Activation,
    pub quick: bool,
    pub format: Format,
    pub plot: Option<String>,
    pub help: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// Parses the command line (without the program name).
pub fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        threads: 1,
        layer_filter: Vec::new(),
        kernels: Vec::new(),
        custom: Vec::new(),
        layout: Layout::Nchw,
        activation: Activation::Identity,
        quick: false,
        format: Format::Table,
        plot: None,
        help: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--help" | "-h" => o.help = true,
            "--quick" => o.quick = true,
            "--threads" => {
                let v = value("--threads")?;
                o.threads = if v == "all" {
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                } else {
                    v.parse()
                        .ok()
                        .filter(|&n: &usize| n >= 1)
                        .ok_or(format!("bad --threads {v}"))?
                };
            }
            "--layers" => o.layer_filter = value("--layers")?.split(',').map(str::to_string).collect(),
            "--kernels" => {
                o.kernels = value("--kernels")?
                    .split(',')
                    .map(|k| match k {
                        "auto" => Ok(auto_kernel()),
                        _ => KernelId::from_name(k).map_err(|e| e.to_string()),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--layer" => o.custom.push(parse_layer(&value("--layer")?)?),
            "--layout" => {
                o.layout = match value("--layout")?.as_str() {
                    "nchw" => Layout::Nchw,
                    "nhwc" => Layout::Nhwc,
                    v => return Err(format!("bad --layout {v} (nchw or nhwc)")),
                }
            }
            "--activation" => {
                let v = value("--activation")?;
                o.activation = suite::activation_by_name(&v)
                    .ok_or(format!("bad --activation {v} ({})", suite::ACTIVATION_NAMES))?;
            }
            "--format" => {
                o.format = match value("--format")?.as_str() {
                    "table" => Format::Table,
                    "csv" => Format::Csv,
                    "json" => Format::Json,
                    v => return Err(format!("bad --format {v} (table, csv or json)")),
                }
            }
            "--plot" => o.plot = Some(value("--plot")?),
            other => return Err(format!("unknown argument {other} (see --help)")),
        }
    }
    Ok(o)
}

/// `n,c,k,h,w[,stride[,pad[,groups]]]`.
pub fn parse_layer(spec: &str) -> Result<Layer, String> {
    let v: Vec<usize> = spec
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad number {s:?} in --layer {spec}"))
        })
        .collect::<Result<_, _>>()?;
    if !(5..=8).contains(&v.len()) {
        return Err(format!("--layer wants n,c,k,h,w[,stride[,pad[,groups]]], got {spec}"));
    }
    let layer = Layer {
        name: format!("custom_{}", spec.replace(',', "_")),
        n: v[0],
        c: v[1],
        k: v[2],
        h: v[3],
        w: v[4],
        stride: *v.get(5).unwrap_or(&1),
        pad: *v.get(6).unwrap_or(&0),
        groups: *v.get(7).unwrap_or(&1),
        memory_bound: false,
    };
    layer
        .conv(Layout::Nchw)
        .validate()
        .map_err(|e| format!("--layer {spec}: {e}"))?;
    if layer.n == 0 || layer.h == 0 || layer.w == 0 {
        return Err(format!("--layer {spec}: n, h and w must be at least 1"));
    }
    Ok(layer)
}

/// The tier whose FMA peak is a kernel's yardstick.
fn peak_tier(kernel: KernelId) -> KernelId {
    match kernel {
        KernelId::MatrixMultiply | KernelId::Reference => [KernelId::Avx2, KernelId::Neon, KernelId::Portable]
            .into_iter()
            .find(|k| k.is_available())
            .unwrap_or(KernelId::Portable),
        k => k,
    }
}

fn progress(done: usize, total: usize, what: &str) {
    let width = 30;
    let filled = done * width / total.max(1);
    eprint!(
        "\r[{}{}] {done}/{total} {what:<44}",
        "#".repeat(filled),
        ".".repeat(width - filled)
    );
    if done == total {
        eprintln!();
    }
    let _ = std::io::stderr().flush();
}

/// Everything one run produced.
pub struct RunResult {
    pub header: String,
    pub rows: Vec<Row>,
    pub kernels: Vec<KernelId>,
    pub peaks: Vec<(&'static str, f64)>,
    pub layers: usize,
}

/// Measures the machine, then every selected layer on every selected kernel.
pub fn run(opts: &Options, show_progress: bool) -> Result<RunResult, String> {
    let kernels: Vec<KernelId> = available_kernels()
        .into_iter()
        .filter(|k| *k != KernelId::Reference)
        .filter(|k| opts.kernels.is_empty() || opts.kernels.contains(k))
        .collect();
    let mut layers: Vec<Layer> = if opts.custom.is_empty() {
        suite::default_suite()
    } else {
        opts.custom.clone()
    };
    if !opts.layer_filter.is_empty() {
        layers.retain(|l| opts.layer_filter.iter().any(|f| l.name.contains(f.as_str())));
    }
    if layers.is_empty() || kernels.is_empty() {
        return Err("nothing to run (check --layers / --kernels)".into());
    }

    // 1. Header.
    let mut header = String::new();
    header += &format!("CPU:              {}\n", machine::cpu_model());
    header += &format!("detected:         {}\n", machine::detected_features().join(" "));
    header += &format!("compiled with:    {}\n", compiled_target_features());
    header += &format!(
        "kernels:          {} (auto picks {})\n",
        kernels.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "),
        auto_kernel()
    );
    header += &format!(
        "threads:          {}   layout: {:?}   activation: {:?}\n",
        opts.threads, opts.layout, opts.activation
    );

    // 2. The machine's limits.
    let peak_secs = if opts.quick { 0.05 } else { 0.3 };
    let mut peaks: Vec<(&'static str, f64)> = Vec::new();
    for tier in [KernelId::Avx512, KernelId::Avx2, KernelId::Neon, KernelId::Portable] {
        if let Some(p) = machine::fma_peak(tier, peak_secs) {
            peaks.push((tier.name(), p));
        }
    }
    let bandwidth = machine::read_bandwidth(if opts.quick { 32 << 20 } else { 512 << 20 }, 3);
    header += "single-core FMA peak (measured): ";
    header += &peaks
        .iter()
        .map(|(t, p)| format!("{t} {p:.1} GFLOP/s"))
        .collect::<Vec<_>>()
        .join(", ");
    header += &format!("\nmemory read bandwidth (measured): {bandwidth:.1} GB/s\n");

    // 3-4. Every layer x kernel.
    let threads = if opts.threads <= 1 {
        Threads::Single
    } else {
        Threads::Count(opts.threads)
    };
    let seconds = if opts.quick { 0.02 } else { 0.12 };
    let total = layers.len() * kernels.len();
    let mut rows: Vec<Row> = Vec::new();
    let mut done = 0;
    for layer in &layers {
        let mut mm_gflops = None;
        let mut layer_rows = Vec::new();
        // matrixmultiply first, so speedups can be computed as we go.
        let mut order = kernels.clone();
        order.sort_by_key(|k| *k != KernelId::MatrixMultiply);
        for kernel in order {
            if show_progress {
                progress(done, total, &format!("{} {}", layer.name, kernel));
            }
            let m = suite::measure(layer, opts.layout, opts.activation, kernel, threads, seconds);
            done += 1;
            if kernel == KernelId::MatrixMultiply {
                mm_gflops = Some(m.gflops);
            }
            let tier = peak_tier(kernel);
            let (pct, basis) = if layer.memory_bound {
                let seconds_taken = layer.flops() / (m.gflops * 1e9);
                (
                    100.0 * (layer.bytes() / (bandwidth * 1e9)) / seconds_taken,
                    "bandwidth".to_string(),
                )
            } else {
                let peak = peaks.iter().find(|(t, _)| *t == tier.name()).map_or(f64::NAN, |p| p.1);
                (
                    100.0 * m.gflops / (peak * opts.threads as f64),
                    format!("fma:{}", tier.name()),
                )
            };
            layer_rows.push(Row {
                layer: layer.clone(),
                layout: if opts.layout == Layout::Nchw { "nchw" } else { "nhwc" },
                kernel: kernel.name(),
                tile: m.tile,
                threads: opts.threads,
                gflops: m.gflops,
                pct_peak: pct,
                basis,
                speedup_vs_matrixmultiply: mm_gflops.map(|b| m.gflops / b),
                max_rel_err: m.max_rel_err,
                ok: m.ok,
            });
        }
        // Report in the kernels' list order.
        layer_rows.sort_by_key(|r| kernels.iter().position(|k| k.name() == r.kernel));
        rows.extend(layer_rows);
    }
    if show_progress {
        progress(total, total, "done");
    }
    Ok(RunResult {
        header,
        rows,
        kernels,
        peaks,
        layers: layers.len(),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}\n\n{HELP}");
            std::process::exit(2);
        }
    };
    if opts.help {
        print!("{HELP}");
        return;
    }
    let result = match run(&opts, true) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let rows = &result.rows;
    match opts.format {
        Format::Table => println!("{}", result.header),
        _ => eprintln!("{}", result.header),
    }
    let names: Vec<&'static str> = result.kernels.iter().map(|k| k.name()).collect();
    match opts.format {
        Format::Table => {
            print!("{}", report::table(rows));
            println!("\nsummary over {} layers (geometric means):", result.layers);
            print!("{}", report::summary(rows, &names));
        }
        Format::Csv => print!("{}", report::csv(rows)),
        Format::Json => print!("{}", report::json(rows)),
    }
    if let Some(path) = &opts.plot {
        let title = format!(
            "pointwise on {} ({} thread(s), {:?})",
            machine::cpu_model(),
            opts.threads,
            opts.layout
        );
        let shown: Vec<KernelId> = result.kernels.iter().map(|&k| peak_tier(k)).collect();
        let plot_peaks: Vec<(&'static str, f64)> = result
            .peaks
            .iter()
            .copied()
            .filter(|(t, _)| shown.iter().any(|k| k.name() == *t))
            .collect();
        match report::plot(path, rows, &names, &plot_peaks, &title) {
            Ok(()) => eprintln!("plot written to {path}"),
            Err(e) => {
                eprintln!("error: could not write the plot: {e}");
                std::process::exit(1);
            }
        }
    }
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} on {}", r.layer.name, r.kernel))
        .collect();
    if !failed.is_empty() {
        eprintln!("FAIL: {}", failed.join("; "));
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parses_every_option() {
        let o = parse_args(&args(
            "--threads 3 --layers resnet,seed --kernels avx2,matrixmultiply --layout nhwc --quick --format csv --plot x.svg",
        ))
        .unwrap();
        assert_eq!(o.threads, 3);
        assert_eq!(o.layer_filter, ["resnet", "seed"]);
        assert_eq!(o.kernels, [KernelId::Avx2, KernelId::MatrixMultiply]);
        assert_eq!(o.layout, Layout::Nhwc);
        assert!(o.quick);
        assert_eq!(o.format, Format::Csv);
        assert_eq!(o.plot.as_deref(), Some("x.svg"));
        assert!(parse_args(&args("--threads all")).unwrap().threads >= 1);
        assert!(parse_args(&args("--help")).unwrap().help);
        assert_eq!(
            parse_args(&args("--activation gelu")).unwrap().activation,
            Activation::Gelu
        );
        assert!(parse_args(&args("--activation swish")).is_err());
        let l = parse_args(&args("--layer 2,12,6,9,9,2,1,3")).unwrap().custom[0].clone();
        assert_eq!(
            (l.n, l.c, l.k, l.h, l.w, l.stride, l.pad, l.groups),
            (2, 12, 6, 9, 9, 2, 1, 3)
        );
        let l = parse_args(&args("--layer 1,3,2,3,3")).unwrap().custom[0].clone();
        assert_eq!((l.stride, l.pad, l.groups), (1, 0, 1));
    }

    #[test]
    fn rejects_bad_arguments() {
        for bad in [
            "--threads 0",
            "--threads x",
            "--threads",
            "--kernels sse9",
            "--layout nchwc",
            "--format xml",
            "--layer 1,2,3",
            "--layer 1,3,2,3,3,0",
            "--layer 1,4,6,3,3,1,0,4",
            "--layer 0,3,2,3,3",
            "--bogus",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad}");
        }
    }

    fn sample_row(ok: bool) -> Row {
        Row {
            layer: suite::Layer::new("l", 1, 2, 3, 4, 1),
            layout: "nchw",
            kernel: "avx2",
            tile: "avx2_f32_6x16_wrows",
            threads: 1,
            gflops: 12.5,
            pct_peak: 50.0,
            basis: "fma:avx2".into(),
            speedup_vs_matrixmultiply: None,
            max_rel_err: 1e-7,
            ok,
        }
    }

    #[test]
    fn csv_and_json_shape() {
        let rows = [sample_row(true), sample_row(false)];
        let csv = report::csv(&rows);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        let header: Vec<&str> = lines[0].split(',').collect();
        for col in [
            "layer",
            "n",
            "c",
            "k",
            "h",
            "w",
            "stride",
            "groups",
            "layout",
            "kernel",
            "tile",
            "threads",
            "gflops",
            "pct_peak",
            "speedup_vs_matrixmultiply",
            "max_rel_err",
            "ok",
        ] {
            assert!(header.contains(&col), "missing {col}");
        }
        assert!(lines[1..].iter().all(|l| l.split(',').count() == header.len()));
        let json = report::json(&rows);
        assert!(json.trim_start().starts_with('[') && json.trim_end().ends_with(']'));
        assert_eq!(json.matches("\"gflops\": 12.50").count(), 2);
        assert_eq!(json.matches("\"speedup_vs_matrixmultiply\": null").count(), 2);
        assert!(json.contains("\"ok\": true") && json.contains("\"ok\": false"));
    }

    #[test]
    fn quick_run_on_two_small_layers() {
        let opts = parse_args(&args("--quick --layer 1,8,16,9,9 --layer 2,12,6,5,7,2,1,3")).unwrap();
        let result = run(&opts, false).unwrap();
        assert_eq!(result.rows.len(), 2 * result.kernels.len());
        for r in &result.rows {
            assert!(r.ok, "{r:?}");
            assert!(r.gflops.is_finite() && r.gflops > 0.0, "{r:?}");
            assert!(r.pct_peak.is_finite() && r.pct_peak > 0.0, "{r:?}");
            assert!(r.max_rel_err.is_finite(), "{r:?}");
        }
        assert!(!result.peaks.is_empty() && result.peaks.iter().all(|p| p.1 > 0.0));
    }

    #[test]
    fn every_activation_passes_its_check_on_every_kernel() {
        for name in suite::ACTIVATION_NAMES.split(", ") {
            let opts = parse_args(&args(&format!("--quick --layer 1,24,40,6,7,1,1 --activation {name}"))).unwrap();
            let result = run(&opts, false).unwrap();
            assert_eq!(result.rows.len(), result.kernels.len());
            for r in &result.rows {
                assert!(r.ok, "{name}: {r:?}");
            }
        }
    }
}
