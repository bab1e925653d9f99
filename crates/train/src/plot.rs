//! Learning curves (loss and accuracy panels, train vs validation) as PNG and SVG, drawn with
//! plotters and the bundled DejaVu Sans font (no system font lookup).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use runfs::write_atomic;

use crate::error::{Error, Result};
use crate::metrics::EpochMetrics;

const SIZE: (u32, u32) = (1200, 460);
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(255, 127, 14);

/// Draws `curves.png` and `curves.svg`-style learning curves of `epochs` to both paths.
/// Each file is written to a temporary sibling first and renamed into place.
pub fn write_curves(epochs: &[EpochMetrics], title: &str, png: &Path, svg: &Path) -> Result<()> {
    if epochs.is_empty() {
        return Err(Error::Plot {
            path: png.to_path_buf(),
            reason: "no epochs to plot".into(),
        });
    }
    let (w, h) = SIZE;
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    render(
        BitMapBackend::with_buffer(&mut pixels, SIZE),
        epochs,
        title,
        png,
    )?;
    write_atomic(png, &encode_png(&pixels, SIZE, png)?)?;
    let mut text = String::new();
    render(SVGBackend::with_string(&mut text, SIZE), epochs, title, svg)?;
    Ok(write_atomic(svg, text.as_bytes())?)
}

/// Draws the curves on `backend` (errors name `path`, the file it is for).
fn render<DB: DrawingBackend>(
    backend: DB,
    epochs: &[EpochMetrics],
    title: &str,
    path: &Path,
) -> Result<()> {
    let root = backend.into_drawing_area();
    draw(&root, epochs, title)
        .and_then(|()| root.present().map_err(|e| e.to_string()))
        .map_err(|reason| Error::Plot {
            path: path.to_path_buf(),
            reason,
        })
}

/// An RGB picture of `size` as PNG bytes.
fn encode_png(rgb: &[u8], (w, h): (u32, u32), path: &Path) -> Result<Vec<u8>> {
    let fail = |e: png::EncodingError| Error::Plot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(rgb).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(bytes)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    epochs: &[EpochMetrics],
    title: &str,
) -> std::result::Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let family = base::font::font();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, (family, 24).into_font()).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    let loss_max = epochs
        .iter()
        .flat_map(|e| [e.loss, e.val_loss])
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let acc_min = epochs
        .iter()
        .flat_map(|e| [e.accuracy, e.val_accuracy])
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::min);
    let panel = |area: &DrawingArea<DB, Shift>,
                 caption: &str,
                 y: std::ops::Range<f64>,
                 pick: &dyn Fn(&EpochMetrics) -> (f64, f64)|
     -> std::result::Result<(), String> {
        let n = epochs.len();
        let x_max = if n == 1 { 2.0 } else { n as f64 };
        let mut chart = ChartBuilder::on(area)
            .caption(caption, (family, 20).into_font())
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(1.0f64..x_max, y)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style((family, 14).into_font())
            .axis_desc_style((family, 16).into_font())
            .draw()
            .map_err(err)?;
        let train: Vec<(f64, f64)> = epochs.iter().map(|e| (e.epoch as f64, pick(e).0)).collect();
        let val: Vec<(f64, f64)> = epochs.iter().map(|e| (e.epoch as f64, pick(e).1)).collect();
        chart
            .draw_series(LineSeries::new(train.clone(), TRAIN.stroke_width(2)))
            .map_err(err)?
            .label("train")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], TRAIN.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(val.clone(), VAL.stroke_width(2)))
            .map_err(err)?
            .label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], VAL.stroke_width(2)));
        if n <= 60 {
            chart
                .draw_series(train.iter().map(|&p| Circle::new(p, 3, TRAIN.filled())))
                .map_err(err)?;
            chart
                .draw_series(val.iter().map(|&p| Circle::new(p, 3, VAL.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .label_font((family, 14).into_font())
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    };
    let loss_top = if loss_max > 0.0 { loss_max * 1.05 } else { 1.0 };
    panel(&panels[0], "loss", 0.0..loss_top, &|e| (e.loss, e.val_loss))?;
    let acc_bottom = (acc_min - 0.02).clamp(0.0, 0.98);
    panel(&panels[1], "accuracy", acc_bottom..1.0, &|e| {
        (e.accuracy, e.val_accuracy)
    })?;
    Ok(())
}
