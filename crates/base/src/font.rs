//! The bundled DejaVu Sans font (no system font lookup), registered once with plotters for every plot
//! and contact sheet.

use std::sync::Once;

use plotters::style::FontStyle;

/// DejaVu Sans (Bitstream Vera licence, see `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The family name the bundled font is registered under.
pub const FAMILY: &str = "sans-serif";

/// Registers the bundled font with plotters (once) and returns its family name.
pub fn font() -> &'static str {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bundled font is a valid TTF; if registration ever failed, plotters would skip the
        // text rather than crash.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
    FAMILY
}
