//! The I/O graph picture: a PNG a person would paste into a report. Bars for the main
//! series, lines for the others, axes with units, a legend, the capture start in the
//! caption. The font is compiled in (DejaVu Sans) so the picture renders the same in a
//! container without fonts.

use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

pub const WIDTH: u32 = 1100;
pub const HEIGHT: u32 = 520;

/// One line of the graph: values per bucket in bits per second.
pub struct Series<'a> {
    pub label: &'a str,
    pub bits_per_s: &'a [f64],
}

const PALETTE: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
];

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // the embedded font is valid TrueType; a failure would only mean unlabelled axes
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// The largest unit that keeps the peak at or above 1.
fn rate_unit(peak: f64) -> (f64, &'static str) {
    [
        (1e9, "Gbit/s"),
        (1e6, "Mbit/s"),
        (1e3, "kbit/s"),
        (1.0, "bit/s"),
    ]
    .into_iter()
    .find(|(d, _)| peak >= *d)
    .unwrap_or((1.0, "bit/s"))
}

/// Renders the graph. `interval_s` is the bucket width; bucket i covers
/// [i*interval, (i+1)*interval) seconds after the first packet.
pub fn io_graph_png(
    title: &str,
    subtitle: &str,
    interval_s: f64,
    series: &[Series<'_>],
) -> Result<Vec<u8>, String> {
    register_font();
    let buckets = series.iter().map(|s| s.bits_per_s.len()).max().unwrap_or(0);
    let peak = series
        .iter()
        .flat_map(|s| s.bits_per_s.iter().copied())
        .fold(0.0f64, f64::max);
    let (div, unit) = rate_unit(peak);
    let x_max = (buckets.max(1) as f64) * interval_s;
    let y_max = (peak / div * 1.1).max(1e-9);
    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, body) = root.split_vertically(58);
        top.draw(&Text::new(
            title.to_string(),
            (20, 8),
            ("sans-serif", 22).into_font().color(&BLACK),
        ))
        .map_err(|e| e.to_string())?;
        top.draw(&Text::new(
            subtitle.to_string(),
            (20, 36),
            ("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)),
        ))
        .map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&body)
            .margin_left(10)
            .margin_right(25)
            .margin_bottom(10)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("Time since first packet (s)")
            .y_desc(format!("Throughput ({unit})"))
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 13))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(210, 210, 210))
            .x_labels(12)
            .y_labels(8)
            .x_label_formatter(&|x| trim_float(*x))
            .y_label_formatter(&|y| trim_float(*y))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            if i == 0 {
                // the total as bars: each bucket's area is what crossed the wire in it
                chart
                    .draw_series(s.bits_per_s.iter().enumerate().map(|(b, v)| {
                        let x0 = b as f64 * interval_s;
                        Rectangle::new(
                            [(x0, 0.0), (x0 + interval_s, v / div)],
                            color.mix(0.75).filled(),
                        )
                    }))
                    .map_err(|e| e.to_string())?
                    .label(s.label)
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 18, y + 5)], color.mix(0.75).filled())
                    });
            } else {
                chart
                    .draw_series(LineSeries::new(
                        s.bits_per_s
                            .iter()
                            .enumerate()
                            .map(|(b, v)| ((b as f64 + 0.5) * interval_s, v / div)),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?
                    .label(s.label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(&buf).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Axis numbers without trailing zeros: 0.5, 2, 12.25.
fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_png_with_units() {
        let a = [1.2e6, 3.4e6, 0.0, 2.0e6];
        let b = [0.2e6, 0.1e6, 0.0, 0.9e6];
        let png = io_graph_png(
            "I/O graph",
            "test",
            0.5,
            &[
                Series {
                    label: "all",
                    bits_per_s: &a,
                },
                Series {
                    label: "tcp",
                    bits_per_s: &b,
                },
            ],
        )
        .unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(png.len() > 5_000);
        assert_eq!(rate_unit(3.4e6), (1e6, "Mbit/s"));
        assert_eq!(trim_float(2.50), "2.5");
    }
}
