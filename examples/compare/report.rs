//! Output of the compare tool: the table, CSV, JSON and the SVG bar chart.
use crate::suite::Layer;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;
use std::io;

/// One layer x kernel result.
#[derive(Debug, Clone)]
pub struct Row {
    pub layer: Layer,
    pub layout: &'static str,
    pub kernel: &'static str,
    /// The register tile the plan ran (`-` for kernels without tiles or the small-problem loop).
    pub tile: &'static str,
    pub threads: usize,
    pub gflops: f64,
    pub pct_peak: f64,
    /// What `pct_peak` is a percentage of: `fma:<tier>` or `bandwidth`.
    pub basis: String,
    pub speedup_vs_matrixmultiply: Option<f64>,
    pub max_rel_err: f64,
    pub ok: bool,
    /// The pass timed: `fwd`, `bwd_data` or `bwd_weights`.
    pub pass: &'static str,
}

/// One row as CSV and JSON write it: the fields in column order, under their column names.
/// The measured numbers are `Number`s: their text for CSV, `f64`s for JSON.
#[derive(Serialize)]
struct Record<'a, Number> {
    layer: &'a str,
    n: usize,
    c: usize,
    k: usize,
    h: usize,
    w: usize,
    stride: usize,
    groups: usize,
    layout: &'a str,
    kernel: &'a str,
    tile: &'a str,
    threads: usize,
    gflops: Number,
    pct_peak: Number,
    peak_basis: &'a str,
    speedup_vs_matrixmultiply: Option<Number>,
    max_rel_err: Number,
    ok: bool,
    pass: &'a str,
}

impl<'a, Number> Record<'a, Number> {
    /// `row`'s record. Each measured number is first written at the precision CSV shows it
    /// with (so CSV and JSON carry the same digits), then made a `Number` by `number`.
    fn new(row: &'a Row, number: impl Fn(String) -> Number) -> Self {
        Record {
            layer: &row.layer.name,
            n: row.layer.n,
            c: row.layer.c,
            k: row.layer.k,
            h: row.layer.h,
            w: row.layer.w,
            stride: row.layer.stride,
            groups: row.layer.groups,
            layout: row.layout,
            kernel: row.kernel,
            tile: row.tile,
            threads: row.threads,
            gflops: number(format!("{:.2}", row.gflops)),
            pct_peak: number(format!("{:.1}", row.pct_peak)),
            peak_basis: &row.basis,
            speedup_vs_matrixmultiply: row.speedup_vs_matrixmultiply.map(|s| number(format!("{s:.2}"))),
            max_rel_err: number(format!("{:.2e}", row.max_rel_err)),
            ok: row.ok,
            pass: row.pass,
        }
    }
}

/// The rows as CSV, with a header line of the column names.
pub fn csv(rows: &[Row]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer
            .serialize(Record::new(row, |text| text))
            .expect("a record of plain fields serializes into memory");
    }
    let bytes = writer.into_inner().expect("flushing into memory cannot fail");
    String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
}

/// The rows as a JSON array of objects, one per line, keyed by the CSV's column names. A
/// number that is NaN or infinite is `null` (serde_json writes non-finite floats so).
pub fn json(rows: &[Row]) -> String {
    let records: Vec<Record<f64>> = rows
        .iter()
        .map(|row| Record::new(row, |text| text.parse().expect("a formatted f64 parses back")))
        .collect();
    let mut bytes = Vec::new();
    records
        .serialize(&mut serde_json::Serializer::with_formatter(&mut bytes, RecordPerLine))
        .expect("records of plain fields serialize into memory");
    bytes.push(b'\n');
    String::from_utf8(bytes).expect("serde_json writes UTF-8")
}

/// serde_json's layout for [`json`]: the array's items each on a line of their own, an
/// object's members on one line as `"key": value, ...`.
struct RecordPerLine;

impl serde_json::ser::Formatter for RecordPerLine {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        writer.write_all(if first { b"\n  " } else { b",\n  " })
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b"\n]")
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }
}

/// The rows as the aligned text table, a layer's name only on its first row. A `pass` column
/// follows `kernel` when any row times a backward pass.
pub fn table(rows: &[Row]) -> String {
    let show_pass = rows.iter().any(|r| r.pass != "fwd");
    let pass_cell = |pass: &str| {
        if show_pass {
            format!(" {pass:<11}")
        } else {
            String::new()
        }
    };
    let mut s = format!(
        "{:<30} {:<15}{} {:<24} {:>9} {:>8} {:>12} {:>9} {:>10} {:>5}\n",
        "layer",
        "kernel",
        pass_cell("pass"),
        "tile",
        "GFLOP/s",
        "% peak",
        "basis",
        "vs mm",
        "max rel",
        "ok"
    );
    let mut last = "";
    for r in rows {
        let name = if r.layer.name == last {
            ""
        } else {
            r.layer.name.as_str()
        };
        last = &r.layer.name;
        s += &format!(
            "{:<30} {:<15}{} {:<24} {:>9.1} {:>7.1}% {:>12} {:>9} {:>10.1e} {:>5}\n",
            name,
            r.kernel,
            pass_cell(r.pass),
            r.tile,
            r.gflops,
            r.pct_peak,
            r.basis,
            r.speedup_vs_matrixmultiply
                .map_or("-".to_string(), |v| format!("{v:.2}x")),
            r.max_rel_err,
            if r.ok { "ok" } else { "FAIL" }
        );
    }
    s
}

/// Geometric mean of GFLOP/s and % of peak per kernel; per kernel and pass when any row
/// times a backward pass.
pub fn summary(rows: &[Row], kernels: &[&'static str]) -> String {
    let mut passes: Vec<&str> = Vec::new();
    for r in rows {
        if !passes.contains(&r.pass) {
            passes.push(r.pass);
        }
    }
    let by_pass = passes.iter().any(|p| *p != "fwd");
    let width = if by_pass { 26 } else { 15 };
    let mut s = format!(
        "{:<width$} {:>14} {:>14} {:>7}\n",
        if by_pass { "kernel pass" } else { "kernel" },
        "geomean GF/s",
        "geomean %peak",
        "layers"
    );
    for &k in kernels {
        for &pass in &passes {
            let mine: Vec<&Row> = rows.iter().filter(|r| r.kernel == k && r.pass == pass).collect();
            if mine.is_empty() {
                continue;
            }
            let gm = |f: &dyn Fn(&Row) -> f64| {
                (mine.iter().map(|r| f(r).max(1e-9).ln()).sum::<f64>() / mine.len() as f64).exp()
            };
            let label = if by_pass { format!("{k} {pass}") } else { k.to_string() };
            s += &format!(
                "{:<width$} {:>14.1} {:>13.1}% {:>7}\n",
                label,
                gm(&|r| r.gflops),
                gm(&|r| r.pct_peak),
                mine.len()
            );
        }
    }
    s
}

/// Grouped bar chart: GFLOP/s per layer, one bar per kernel, each tier's FMA peak as a line.
pub fn plot(
    path: &str,
    rows: &[Row],
    kernels: &[&'static str],
    peaks: &[(&'static str, f64)],
    title: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut layers: Vec<&str> = Vec::new();
    for r in rows {
        if !layers.contains(&r.layer.name.as_str()) {
            layers.push(&r.layer.name);
        }
    }
    let ymax = rows
        .iter()
        .map(|r| r.gflops)
        .chain(peaks.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.12;
    let width = (160 + layers.len() * 70).max(900) as u32;
    let root = SVGBackend::new(path, (width, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(190)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..layers.len() as f64, 0f64..ymax)?;
    let labels = layers.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(layers.len() * 2 + 1)
        .x_label_formatter(&|v| {
            let i = v.floor() as usize;
            if (v - i as f64 - 0.5).abs() < 0.01 && i < labels.len() {
                labels[i].to_string()
            } else {
                String::new()
            }
        })
        .x_label_style(
            TextStyle::from(("sans-serif", 12).into_font())
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Right, VPos::Center)),
        )
        .y_desc("GFLOP/s (median, higher is better)")
        .draw()?;
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    let slot = 0.8 / kernels.len().max(1) as f64;
    for (ki, &k) in kernels.iter().enumerate() {
        let color = palette[ki % palette.len()];
        let bars: Vec<Rectangle<(f64, f64)>> = rows
            .iter()
            .filter(|r| r.kernel == k)
            .filter_map(|r| {
                let li = layers.iter().position(|l| *l == r.layer.name)?;
                let x0 = li as f64 + 0.1 + ki as f64 * slot;
                Some(Rectangle::new([(x0, 0.0), (x0 + slot * 0.9, r.gflops)], color.filled()))
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(k)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    for (pi, &(tier, peak)) in peaks.iter().enumerate() {
        let color = palette[kernels.iter().position(|k| *k == tier).unwrap_or(pi) % palette.len()];
        let style = ShapeStyle {
            color: color.to_rgba(),
            filled: false,
            stroke_width: 2,
        };
        chart
            .draw_series(LineSeries::new(vec![(0.0, peak), (layers.len() as f64, peak)], style))?
            .label(format!("{tier} FMA peak {peak:.0} GFLOP/s"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    drop(chart);
    drop(root);
    // plotters' SVG backend centres rotated text on its anchor; anchor the layer names at
    // their end instead, so they hang below the axis rather than across the bars.
    let svg = std::fs::read_to_string(path)?;
    let fixed: Vec<String> = svg
        .lines()
        .map(|l| {
            if l.contains("transform=\"rotate(270") {
                l.replace("text-anchor=\"middle\"", "text-anchor=\"end\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(path, fixed.join("\n"))?;
    Ok(())
}
