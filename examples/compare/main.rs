//! `compare`: every pointwise kernel on this CPU, side by side, verified against f64, with the
//! machine's measured limits as the yardstick. The README's main job.
//!
//! Run `cargo run --release --example compare -- --help` for the options.
mod machine;
mod report;
mod suite;

use clap::{ArgAction, Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use pointwise::{auto_kernel, available_kernels, compiled_target_features, Activation, KernelId, Layout, Threads};
use report::Row;
use suite::{Layer, Pass};

/// The first paragraph of `--help`.
const ABOUT: &str = "\
compare: runs every pointwise kernel available on this CPU over a suite of 1x1 layers,
checks each result against an f64 reference, and reports GFLOP/s side by side.";

/// The last section of `--help`: what the columns mean.
const READING_THE_NUMBERS: &str = "\
READING THE NUMBERS:
  GFLOP/s   = 2*K*(C/groups)*Ho*Wo*N / median time of one forward call (or, with
              --pass, of one backward pass: the same count for each; a training step
              counts three times that, so step time / fwd time = 3 * fwd / step).
  % peak    = GFLOP/s / the single-core FMA peak of the kernel's tier, measured at start
              (basis fma:<tier>), times the thread count; matrixmultiply and portable are
              measured against the widest tier they can use. Memory-bound layers (basis
              bandwidth) instead give the time a pure read of their input, weights and output
              at the measured memory bandwidth would take, as a % of the measured time.
  vs mm     = speedup over the matrixmultiply kernel in the same run.
  max rel   = max |y - ref| / (sum|w*x| + |b|) over sampled outputs; a kernel whose error
              exceeds 2*gamma(C/groups + 1) on any output (times the activation's Lipschitz
              constant, plus its stated error) is FAIL, and compare exits 1. Backward passes
              are checked the same way against sum|terms|, with bound 2*gamma(L + 1): L = K/groups
              for bwd_data (dx = W^T dz), L = N*Ho*Wo for bwd_weights (dw = dz x^T).";

/// The command line. Each field's doc comment is its entry in `--help`, line breaks kept
/// (`verbatim_doc_comment`); the defaults are stated there, so clap's own `[default: ...]`
/// notes are hidden. A repeated option keeps its last value, except `--layer`, which adds a
/// layer each time.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(
    name = "compare",
    about = ABOUT,
    long_about = None,
    override_usage = "cargo run --release --example compare -- [OPTIONS]",
    after_help = READING_THE_NUMBERS,
    args_override_self = true,
    hide_possible_values = true,
    disable_help_flag = true,
)]
pub struct Options {
    /// threads per forward call (default 1; `all` = every core)
    #[arg(long, value_name = "N|all", default_value_t = 1, hide_default_value = true, value_parser = parse_threads)]
    pub threads: usize,
    /// only suite layers whose name contains one of these substrings
    #[arg(long = "layers", value_name = "A,B,...", value_delimiter = ',', action = ArgAction::Set)]
    pub layer_filter: Vec<String>,
    /// only these kernels (avx512bf16, avx512, avx2, neonbf16, neon, portable,
    /// matrixmultiply; `auto` = the one Auto picks on this CPU)
    #[arg(
        long,
        value_name = "A,B,...",
        value_delimiter = ',',
        action = ArgAction::Set,
        value_parser = parse_kernel,
        verbatim_doc_comment
    )]
    pub kernels: Vec<KernelId>,
    /// a custom layer n,c,k,h,w[,stride[,pad[,groups]]] instead of
    /// the suite (repeatable)
    #[arg(long = "layer", value_name = "SPEC", value_parser = parse_layer, verbatim_doc_comment)]
    pub custom: Vec<Layer>,
    /// the layers of FILE instead of the suite, one per line:
    /// `name n c k h w [stride [groups]]` (`#` comments and blank
    /// lines ignored; the format of benches/sweep/shapes.txt and of
    /// the peers harness's --layers-file); with --layer, both run
    #[arg(long = "layers-file", value_name = "FILE", value_parser = parse_layers_file, verbatim_doc_comment)]
    pub layers_file: Option<LayersFile>,
    /// memory layout (default nchw)
    #[arg(long, value_name = "nchw|nhwc", default_value = "nchw", hide_default_value = true, value_parser = parse_layout)]
    pub layout: Layout,
    /// fuse this activation into every layer (default identity):
    /// identity, relu, relu6, clamp, leaky_relu, prelu, hardswish,
    /// hardsigmoid, sigmoid, tanh, silu, gelu, gelu_tanh; checked
    /// against its f64 formula
    #[arg(
        long,
        value_name = "NAME",
        default_value = "identity",
        hide_default_value = true,
        value_parser = parse_activation,
        verbatim_doc_comment
    )]
    pub activation: Activation,
    /// the passes to time (default fwd): fwd, fwd_bf16 (bf16
    /// weights, input and output, f32 sums), bwd_data, bwd_weights
    /// (the backward passes of pointwise::BackwardPlan; the
    /// activation plays no part in them), step (forward_training
    /// with ReLU and bias, then BackwardPlan::backward for dx, dw
    /// and db; three products' flops); a row each
    #[arg(
        long = "pass",
        value_name = "A,B,...",
        value_enum,
        value_delimiter = ',',
        action = ArgAction::Set,
        default_value = "fwd",
        hide_default_value = true,
        verbatim_doc_comment
    )]
    pub passes: Vec<Pass>,
    /// element types of the forward pass (default f32): f32, bf16;
    /// `--dtype f32,bf16` times both, a row each (the same as
    /// `--pass fwd,fwd_bf16`; backward passes are f32 only)
    #[arg(
        long = "dtype",
        value_name = "f32|bf16",
        value_delimiter = ',',
        action = ArgAction::Set,
        value_parser = ["f32", "bf16"],
        verbatim_doc_comment
    )]
    pub dtypes: Vec<String>,
    /// short timings (for CI); numbers are noisier
    #[arg(long)]
    pub quick: bool,
    /// stdout format (default table); the header goes to stderr
    /// for csv/json
    #[arg(
        long,
        value_name = "table|csv|json",
        value_enum,
        default_value_t = Format::Table,
        hide_default_value = true,
        verbatim_doc_comment
    )]
    pub format: Format,
    /// also draw a grouped bar chart: GFLOP/s per layer, a bar per
    /// kernel, each tier's FMA peak as a horizontal line (of the
    /// first --pass only)
    #[arg(long, value_name = "FILE.svg", verbatim_doc_comment)]
    pub plot: Option<String>,
    // clap's own help flag, declared here to keep the wording "this text": parsing stops at it
    // (help printed, exit 0), so the field itself is never set.
    /// this text
    #[arg(short, long, action = ArgAction::Help)]
    help: Option<bool>,
}

/// What stdout gets: `--format table|csv|json`.
#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// `--threads`: a count of at least 1, or `all` for every core.
fn parse_threads(value: &str) -> Result<usize, String> {
    if value == "all" {
        return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
    value
        .parse()
        .ok()
        .filter(|&n: &usize| n >= 1)
        .ok_or_else(|| "expected a thread count of at least 1, or `all`".to_string())
}

/// One name of `--kernels`: a kernel's name, or `auto` for the one Auto picks.
fn parse_kernel(name: &str) -> Result<KernelId, String> {
    match name {
        "auto" => Ok(auto_kernel()),
        _ => KernelId::from_name(name).map_err(|e| e.to_string()),
    }
}

/// `--layout nchw|nhwc`.
fn parse_layout(name: &str) -> Result<Layout, String> {
    match name {
        "nchw" => Ok(Layout::Nchw),
        "nhwc" => Ok(Layout::Nhwc),
        _ => Err("expected nchw or nhwc".into()),
    }
}

/// `--activation NAME`.
fn parse_activation(name: &str) -> Result<Activation, String> {
    suite::activation_by_name(name).ok_or_else(|| format!("expected one of {}", suite::ACTIVATION_NAMES))
}

/// `--layer n,c,k,h,w[,stride[,pad[,groups]]]`.
pub fn parse_layer(spec: &str) -> Result<Layer, String> {
    let v = parse_numbers(spec.split(','))?;
    if !(5..=8).contains(&v.len()) {
        return Err("expected n,c,k,h,w[,stride[,pad[,groups]]]".into());
    }
    let [stride, pad, groups] = [(5, 1), (6, 0), (7, 1)].map(|(i, default)| *v.get(i).unwrap_or(&default));
    let name = format!("custom_{}", spec.replace(',', "_"));
    checked_layer(name, [v[0], v[1], v[2], v[3], v[4], stride, pad, groups])
}

/// Each field as a count.
fn parse_numbers<'a>(fields: impl Iterator<Item = &'a str>) -> Result<Vec<usize>, String> {
    fields
        .map(|s| s.trim().parse::<usize>().map_err(|_| format!("bad number {s:?}")))
        .collect()
}

/// The layer `name` with `[n, c, k, h, w, stride, pad, groups]`, when it is a valid
/// convolution with at least one image and pixel.
fn checked_layer(name: String, [n, c, k, h, w, stride, pad, groups]: [usize; 8]) -> Result<Layer, String> {
    let layer = Layer {
        name,
        n,
        c,
        k,
        h,
        w,
        stride,
        pad,
        groups,
        memory_bound: false,
    };
    layer.conv(Layout::Nchw).validate().map_err(|e| e.to_string())?;
    if layer.n == 0 || layer.h == 0 || layer.w == 0 {
        return Err("n, h and w must be at least 1".into());
    }
    Ok(layer)
}

/// The layers of a `--layers-file`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayersFile(pub Vec<Layer>);

/// `--layers-file FILE`: reads the file and parses every layer line.
fn parse_layers_file(path: &str) -> Result<LayersFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    parse_layer_lines(&text)
        .map(LayersFile)
        .map_err(|e| format!("{path}: {e}"))
}

/// The lines of a layers file: `name n c k h w [stride [groups]]`, `#` starting a comment.
pub fn parse_layer_lines(text: &str) -> Result<Vec<Layer>, String> {
    let mut layers = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let name = fields.next().unwrap_or_default().to_string();
        let at = |e: String| format!("line {}: {e}", i + 1);
        let v = parse_numbers(fields).map_err(at)?;
        if !(5..=7).contains(&v.len()) {
            return Err(at("expected `name n c k h w [stride [groups]]`".into()));
        }
        // No padding: the format has none.
        let [stride, groups] = [5, 6].map(|i| *v.get(i).unwrap_or(&1));
        let layer = checked_layer(name, [v[0], v[1], v[2], v[3], v[4], stride, 0, groups]).map_err(at)?;
        layers.push(layer);
    }
    if layers.is_empty() {
        return Err("no layers".into());
    }
    Ok(layers)
}

/// The tier whose FMA peak is a kernel's yardstick (a bf16 kernel's f32 tiles are its base
/// tier's, `KernelId::f32_kernel`; the avx512bf16 pair tiles are measured against the
/// `vdpbf16ps` peak instead).
fn peak_tier(kernel: KernelId) -> KernelId {
    match kernel.f32_kernel() {
        KernelId::MatrixMultiply | KernelId::Reference => [KernelId::Avx2, KernelId::Neon, KernelId::Portable]
            .into_iter()
            .find(|k| k.is_available())
            .unwrap_or(KernelId::Portable),
        k => k,
    }
}

/// The bar over a run's layer x kernel measurements: on stderr, where indicatif draws
/// nothing unless stderr is a terminal (so redirected logs stay clean); hidden if `show` is
/// false.
fn progress_bar(total: usize, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg}")
        .expect("the template is valid")
        .progress_chars("#.");
    ProgressBar::new(total as u64).with_style(style)
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
    let mut layers: Vec<Layer> = opts.custom.clone();
    layers.extend(opts.layers_file.iter().flat_map(|f| f.0.iter().cloned()));
    if layers.is_empty() {
        layers = suite::default_suite();
    }
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
    let dot_peak = machine::bf16_dot_peak(peak_secs);
    if let Some(p) = dot_peak {
        header += &format!("\nsingle-core bf16 pair peak (vdpbf16ps, measured): {p:.1} GFLOP/s");
    }
    header += &format!("\nmemory read bandwidth (measured): {bandwidth:.1} GB/s\n");

    // 3-4. Every layer x kernel.
    let threads = if opts.threads <= 1 {
        Threads::Single
    } else {
        Threads::Count(opts.threads)
    };
    let seconds = if opts.quick { 0.02 } else { 0.12 };
    let passes = opts.passes_to_time();
    let progress = progress_bar(layers.len() * kernels.len() * passes.len(), show_progress);
    let mut rows: Vec<Row> = Vec::new();
    for (layer, &pass) in layers.iter().flat_map(|l| passes.iter().map(move |p| (l, p))) {
        let mut mm_gflops = None;
        let mut layer_rows = Vec::new();
        // matrixmultiply first, so speedups can be computed as we go.
        let mut order = kernels.clone();
        order.sort_by_key(|k| *k != KernelId::MatrixMultiply);
        for kernel in order {
            if pass == Pass::Fwd {
                progress.set_message(format!("{} {}", layer.name, kernel));
            } else {
                progress.set_message(format!("{} {} {}", layer.name, kernel, pass.name()));
            }
            let m = match pass {
                Pass::Fwd | Pass::FwdBf16 => {
                    let bf16 = pass == Pass::FwdBf16;
                    suite::measure(layer, opts.layout, opts.activation, kernel, threads, seconds, bf16)
                }
                _ => suite::measure_backward(layer, opts.layout, pass, kernel, threads, seconds),
            };
            progress.inc(1);
            if kernel == KernelId::MatrixMultiply {
                mm_gflops = Some(m.gflops);
            }
            let tier = peak_tier(kernel);
            let (pct, basis) = if layer.memory_bound {
                let seconds_taken = layer.flops() / (m.gflops * 1e9);
                // bf16 tensors move half the bytes (the weights are small either way).
                let bytes = if pass == Pass::FwdBf16 {
                    layer.bytes() / 2.0
                } else {
                    layer.bytes()
                };
                (
                    100.0 * (bytes / (bandwidth * 1e9)) / seconds_taken,
                    "bandwidth".to_string(),
                )
            } else if let Some(dot) = dot_peak.filter(|_| m.tile.starts_with("avx512bf16_bf16_")) {
                // A bf16-pair tile ran: its yardstick is the vdpbf16ps peak.
                (
                    100.0 * m.gflops / (dot * opts.threads as f64),
                    "dot:avx512bf16".to_string(),
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
                pass: pass.name(),
            });
        }
        // Report in the kernels' list order.
        layer_rows.sort_by_key(|r| kernels.iter().position(|k| k.name() == r.kernel));
        rows.extend(layer_rows);
    }
    progress.finish_with_message("done");
    Ok(RunResult {
        header,
        rows,
        kernels,
        peaks,
        layers: layers.len(),
    })
}

impl Options {
    /// The passes in the order given, each once; `--dtype` turns the forward pass into one
    /// row per element type.
    fn passes_to_time(&self) -> Vec<Pass> {
        let mut passes: Vec<Pass> = Vec::new();
        for &p in &self.passes {
            let as_typed: Vec<Pass> = if p == Pass::Fwd && !self.dtypes.is_empty() {
                self.dtypes
                    .iter()
                    .map(|d| if d == "bf16" { Pass::FwdBf16 } else { Pass::Fwd })
                    .collect()
            } else {
                vec![p]
            };
            for p in as_typed {
                if !passes.contains(&p) {
                    passes.push(p);
                }
            }
        }
        passes
    }
}

fn main() {
    let opts = Options::parse();
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
        let first_pass = opts.passes_to_time().first().map_or("fwd", |p| p.name());
        let plot_rows: Vec<Row> = rows.iter().filter(|r| r.pass == first_pass).cloned().collect();
        match report::plot(path, &plot_rows, &names, &plot_peaks, &title) {
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
        .map(|r| match r.pass {
            "fwd" => format!("{} on {}", r.layer.name, r.kernel),
            pass => format!("{} on {} ({pass})", r.layer.name, r.kernel),
        })
        .collect();
    if !failed.is_empty() {
        eprintln!("FAIL: {}", failed.join("; "));
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Parses a command line given without the program name.
    fn parse_args(line: &str) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("compare").chain(line.split_whitespace()))
    }

    #[test]
    fn command_line_definition_is_consistent() {
        Options::command().debug_assert();
    }

    #[test]
    fn parses_every_option() {
        let o = parse_args(
            "--threads 3 --layers resnet,seed --kernels avx2,matrixmultiply --layout nhwc --quick --format csv --plot x.svg",
        )
        .unwrap();
        assert_eq!(o.threads, 3);
        assert_eq!(o.layer_filter, ["resnet", "seed"]);
        assert_eq!(o.kernels, [KernelId::Avx2, KernelId::MatrixMultiply]);
        assert_eq!(o.layout, Layout::Nhwc);
        assert!(o.quick);
        assert_eq!(o.format, Format::Csv);
        assert_eq!(o.plot.as_deref(), Some("x.svg"));
        assert!(parse_args("--threads all").unwrap().threads >= 1);
        assert_eq!(parse_args("--activation gelu").unwrap().activation, Activation::Gelu);
        assert!(parse_args("--activation swish").is_err());
        let l = parse_args("--layer 2,12,6,9,9,2,1,3").unwrap().custom[0].clone();
        assert_eq!(
            (l.n, l.c, l.k, l.h, l.w, l.stride, l.pad, l.groups),
            (2, 12, 6, 9, 9, 2, 1, 3)
        );
        let l = parse_args("--layer 1,3,2,3,3").unwrap().custom[0].clone();
        assert_eq!((l.stride, l.pad, l.groups), (1, 0, 1));
    }

    #[test]
    fn parses_layers_files() {
        let layers = parse_layer_lines(
            "# name n c k h w stride groups\n\ng8-1 1 64 64 7 7 1 8 # grouped\nk1 2 16 1 5 6\ns 1 9 3 7 7 2\n",
        )
        .unwrap();
        let got: Vec<_> = layers
            .iter()
            .map(|l| (l.name.as_str(), l.n, l.c, l.k, l.h, l.w, l.stride, l.pad, l.groups))
            .collect();
        assert_eq!(
            got,
            [
                ("g8-1", 1, 64, 64, 7, 7, 1, 0, 8),
                ("k1", 2, 16, 1, 5, 6, 1, 0, 1),
                ("s", 1, 9, 3, 7, 7, 2, 0, 1)
            ]
        );
        for bad in [
            "",
            "# only a comment\n",
            "a 1 2 3\n",
            "a 1 2 3 4 5 6 7 8\n",
            "a 1 6 4 3 3 1 4\n",
            "a 1 x 4 3 3\n",
        ] {
            assert!(parse_layer_lines(bad).is_err(), "{bad:?}");
        }
        // The repository's sweep parses whole.
        let sweep = include_str!("../../benches/sweep/shapes.txt");
        assert!(parse_layer_lines(sweep).unwrap().len() >= 120);
        assert!(parse_args("--layers-file /nonexistent/shapes.txt").is_err());
    }

    #[test]
    fn defaults_and_repeats() {
        let o = parse_args("").unwrap();
        assert_eq!(
            (o.threads, o.layout, o.activation, o.quick, o.format),
            (1, Layout::Nchw, Activation::Identity, false, Format::Table)
        );
        assert!(o.layer_filter.is_empty() && o.kernels.is_empty() && o.custom.is_empty() && o.plot.is_none());
        assert_eq!(o.passes, [Pass::Fwd]);
        // A repeated option keeps its last value; `--layer` adds a layer each time.
        let o = parse_args("--threads 2 --threads 3 --layers a,b --layers c --layer 1,3,2,3,3 --layer 1,3,2,3,3,2")
            .unwrap();
        assert_eq!(
            (o.threads, o.layer_filter, o.custom.len()),
            (3, vec!["c".to_string()], 2)
        );
    }

    #[test]
    fn help_is_an_exit_0_request() {
        for flag in ["--help", "-h"] {
            let e = parse_args(flag).unwrap_err();
            assert_eq!((e.kind(), e.exit_code()), (clap::error::ErrorKind::DisplayHelp, 0));
            let text = e.to_string();
            assert!(text.contains("--layer <SPEC>") && text.contains("READING THE NUMBERS"));
        }
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
            "--pass bwd",
            "--pass fwd,bwd-data",
            "--layer 1,2,3",
            "--layer 1,3,2,3,3,0",
            "--layer 1,4,6,3,3,1,0,4",
            "--layer 0,3,2,3,3",
            "--bogus",
        ] {
            let e = parse_args(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
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
            pass: "fwd",
        }
    }

    /// The CSV header line every consumer of `--format csv` reads.
    const CSV_HEADER: &str = "layer,n,c,k,h,w,stride,groups,layout,kernel,tile,threads,gflops,pct_peak,peak_basis,speedup_vs_matrixmultiply,max_rel_err,ok,pass";

    #[test]
    fn csv_header_and_rows() {
        let csv = report::csv(&[sample_row(true), sample_row(false)]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(
            lines[1..],
            [
                "l,1,2,3,4,4,1,1,nchw,avx2,avx2_f32_6x16_wrows,1,12.50,50.0,fma:avx2,,1.00e-7,true,fwd",
                "l,1,2,3,4,4,1,1,nchw,avx2,avx2_f32_6x16_wrows,1,12.50,50.0,fma:avx2,,1.00e-7,false,fwd",
            ]
        );
        assert!(csv.ends_with('\n') && !csv.contains('\r'));
    }

    #[test]
    fn json_is_valid_with_the_csv_columns_as_keys() {
        let mut with_speedup = sample_row(false);
        with_speedup.speedup_vs_matrixmultiply = Some(1.5);
        let json = report::json(&[sample_row(true), with_speedup]);
        assert_eq!(json.lines().count(), 4, "one record per line:\n{json}");
        for record_line in json.lines().filter(|line| line.contains('{')) {
            let key_positions: Vec<usize> = CSV_HEADER
                .split(',')
                .map(|key| record_line.find(&format!("\"{key}\": ")).expect(key))
                .collect();
            assert!(key_positions.is_sorted(), "keys out of CSV column order: {record_line}");
        }
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        let records = parsed.as_array().unwrap();
        assert_eq!(records.len(), 2);
        for record in records {
            assert_eq!(record.as_object().unwrap().len(), CSV_HEADER.split(',').count());
            assert_eq!(record["gflops"], 12.5);
            assert_eq!(record["max_rel_err"], 1e-7);
            assert_eq!(record["tile"], "avx2_f32_6x16_wrows");
        }
        assert!(records[0]["speedup_vs_matrixmultiply"].is_null());
        assert_eq!(records[1]["speedup_vs_matrixmultiply"], 1.5);
        assert_eq!((&records[0]["ok"], &records[1]["ok"]), (&true.into(), &false.into()));
    }

    #[test]
    fn json_with_nan_or_infinite_numbers_parses() {
        let mut row = sample_row(false);
        row.gflops = f64::NAN;
        row.pct_peak = f64::INFINITY;
        row.speedup_vs_matrixmultiply = Some(f64::NEG_INFINITY);
        row.max_rel_err = f64::NAN;
        let json = report::json(&[row]);
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}:\n{json}"));
        for key in ["gflops", "pct_peak", "speedup_vs_matrixmultiply", "max_rel_err"] {
            assert!(parsed[0][key].is_null(), "{key}: {json}");
        }
    }

    #[test]
    fn quick_run_on_two_small_layers() {
        let opts = parse_args("--quick --layer 1,8,16,9,9 --layer 2,12,6,5,7,2,1,3").unwrap();
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
    fn dtype_selects_the_forward_rows() {
        assert_eq!(parse_args("").unwrap().passes_to_time(), [Pass::Fwd]);
        assert_eq!(parse_args("--dtype bf16").unwrap().passes_to_time(), [Pass::FwdBf16]);
        assert_eq!(
            parse_args("--dtype f32,bf16").unwrap().passes_to_time(),
            [Pass::Fwd, Pass::FwdBf16]
        );
        assert_eq!(
            parse_args("--dtype bf16 --pass fwd,bwd_data").unwrap().passes_to_time(),
            [Pass::FwdBf16, Pass::BwdData]
        );
        assert!(parse_args("--dtype f16").is_err());
    }

    #[test]
    fn backward_passes_parse_and_pass_their_checks() {
        let o = parse_args("--pass bwd_data,bwd_weights").unwrap();
        assert_eq!(o.passes, [Pass::BwdData, Pass::BwdWeights]);
        let o = parse_args("--pass fwd,bwd_data,bwd_weights").unwrap();
        assert_eq!(o.passes, [Pass::Fwd, Pass::BwdData, Pass::BwdWeights]);
        // The seed layers (stride 1 and 2) and a small strided, padded, grouped layer.
        let opts = parse_args("--quick --layers seed --pass bwd_data,bwd_weights,step").unwrap();
        let small =
            parse_args("--quick --layer 2,12,6,5,7,2,1,3 --pass bwd_data,bwd_weights,step --layout nhwc").unwrap();
        for opts in [opts, small] {
            let result = run(&opts, false).unwrap();
            assert_eq!(result.rows.len(), 3 * result.layers * result.kernels.len());
            for r in &result.rows {
                assert!(["bwd_data", "bwd_weights", "step"].contains(&r.pass), "{r:?}");
                assert!(r.ok, "{r:?}");
                assert!(r.gflops.is_finite() && r.gflops > 0.0, "{r:?}");
                assert!(r.max_rel_err.is_finite(), "{r:?}");
            }
        }
        let table = report::table(&[sample_row(true)]);
        assert!(
            !table.contains("pass"),
            "no pass column without a backward row:\n{table}"
        );
    }

    #[test]
    fn the_bf16_forward_passes_its_check_on_every_kernel() {
        // Every kernel within the bound widened by the bf16 output's rounding.
        let bf16 = parse_args("--quick --layer 1,3,2,3,3 --layer 2,40,24,5,7,2,1,4 --pass fwd,fwd_bf16").unwrap();
        let result = run(&bf16, false).unwrap();
        assert_eq!(result.rows.len(), 2 * result.layers * result.kernels.len());
        assert!(result.rows.iter().any(|r| r.pass == "fwd_bf16"));
        for r in &result.rows {
            assert!(r.ok, "{r:?}");
            assert!(r.gflops.is_finite() && r.gflops > 0.0, "{r:?}");
        }
    }

    #[test]
    fn every_activation_passes_its_check_on_every_kernel() {
        for name in suite::ACTIVATION_NAMES.split(", ") {
            let opts = parse_args(&format!("--quick --layer 1,24,40,6,7,1,1 --activation {name}")).unwrap();
            let result = run(&opts, false).unwrap();
            assert_eq!(result.rows.len(), result.kernels.len());
            for r in &result.rows {
                assert!(r.ok, "{name}: {r:?}");
            }
        }
    }
}
