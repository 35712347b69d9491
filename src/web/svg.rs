//! What the hand-drawn SVGs (the procedure picture, the KPI charts) share: the font, the
//! text width estimate used to size boxes and label columns, coordinates written short, and
//! escaping. Both are drawn with presentation attributes only (the pages' CSP forbids inline
//! styles); nothing here knows what it draws.

/// The font of every drawn text (the pages' own stack).
pub const FONT: &str = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif";

/// About how wide `text` is at `px` (wide characters — CJK — count as one em, others as
/// 0.58): the SVG is written before any browser measures it.
pub fn text_width(text: &str, px: f64) -> f64 {
    text.chars()
        .map(|c| if c.len_utf8() >= 3 { 1.0 } else { 0.58 })
        .sum::<f64>()
        * px
}

/// A coordinate with one decimal: enough for a screen, and stable in snapshots.
pub fn coord(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r == 0.0 {
        "0".into()
    } else {
        format!("{r}")
    }
}

/// Text for an SVG drawn by hand (the picture, the charts): XML-escaped, control characters
/// as spaces, so a label can never become markup.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}
