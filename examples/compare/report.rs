//! Output of the compare tool: the table, CSV, JSON and the SVG bar chart.
use crate::suite::Layer;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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
}

const HEADER: [&str; 18] = [
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
    "peak_basis",
    "speedup_vs_matrixmultiply",
    "max_rel_err",
    "ok",
];

fn fields(r: &Row) -> Vec<String> {
    vec![
        r.layer.name.clone(),
        r.layer.n.to_string(),
        r.layer.c.to_string(),
        r.layer.k.to_string(),
        r.layer.h.to_string(),
        r.layer.w.to_string(),
        r.layer.stride.to_string(),
        r.layer.groups.to_string(),
        r.layout.to_string(),
        r.kernel.to_string(),
        r.tile.to_string(),
        r.threads.to_string(),
        format!("{:.2}", r.gflops),
        format!("{:.1}", r.pct_peak),
        r.basis.clone(),
        r.speedup_vs_matrixmultiply.map_or(String::new(), |s| format!("{s:.2}")),
        format!("{:.2e}", r.max_rel_err),
        r.ok.to_string(),
    ]
}

pub fn csv(rows: &[Row]) -> String {
    let mut s = HEADER.join(",") + "\n";
    for r in rows {
        s += &(fields(r).join(",") + "\n");
    }
    s
}

pub fn json(rows: &[Row]) -> String {
    let mut s = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let f = fields(r);
        let items: Vec<String> = HEADER
            .iter()
            .zip(&f)
            .map(|(h, v)| {
                let numeric = !matches!(*h, "layer" | "layout" | "kernel" | "tile" | "peak_basis" | "ok");
                if *h == "ok" {
                    format!("\"{h}\": {v}")
                } else if numeric {
                    format!("\"{h}\": {}", if v.is_empty() { "null" } else { v })
                } else {
                    format!("\"{h}\": \"{}\"", v.replace('"', "'"))
                }
            })
            .collect();
        s += &format!(
            "  {{{}}}{}\n",
            items.join(", "),
            if i + 1 < rows.len() { "," } else { "" }
        );
    }
    s + "]\n"
}

pub fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<30} {:<15} {:<24} {:>9} {:>8} {:>12} {:>9} {:>10} {:>5}\n",
        "layer", "kernel", "tile", "GFLOP/s", "% peak", "basis", "vs mm", "max rel", "ok"
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
            "{:<30} {:<15} {:<24} {:>9.1} {:>7.1}% {:>12} {:>9} {:>10.1e} {:>5}\n",
            name,
            r.kernel,
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

/// Geometric mean of GFLOP/s and % of peak per kernel.
pub fn summary(rows: &[Row], kernels: &[&'static str]) -> String {
    let mut s = format!(
        "{:<15} {:>14} {:>14} {:>7}\n",
        "kernel", "geomean GF/s", "geomean %peak", "layers"
    );
    for &k in kernels {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.kernel == k).collect();
        if mine.is_empty() {
            continue;
        }
        let gm =
            |f: &dyn Fn(&Row) -> f64| (mine.iter().map(|r| f(r).max(1e-9).ln()).sum::<f64>() / mine.len() as f64).exp();
        s += &format!(
            "{:<15} {:>14.1} {:>13.1}% {:>7}\n",
            k,
            gm(&|r| r.gflops),
            gm(&|r| r.pct_peak),
            mine.len()
        );
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
