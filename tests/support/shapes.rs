//! Synthetic image–caption data for tests: coloured shapes on white, 32×32 RGB.
#![allow(dead_code)]

pub const COLORS: [(&str, [u8; 3]); 8] = [
    ("red", [220, 30, 30]),
    ("green", [30, 180, 40]),
    ("blue", [30, 60, 220]),
    ("yellow", [240, 220, 20]),
    ("purple", [140, 40, 170]),
    ("orange", [250, 140, 20]),
    ("black", [10, 10, 10]),
    ("pink", [250, 150, 200]),
];
pub const SHAPES: [&str; 4] = ["square", "disc", "cross", "bar"];
pub const SIZES: [(&str, i32); 2] = [("small", 6), ("large", 13)];

/// A 32×32 RGB (HWC) image of `shape` with radius `r` in colour `rgb` on white.
pub fn draw(shape: &str, rgb: [u8; 3], r: i32) -> Vec<u8> {
    let mut px = vec![255u8; 32 * 32 * 3];
    for y in 0..32i32 {
        for x in 0..32i32 {
            let (dx, dy) = (x - 16, y - 16);
            let inside = match shape {
                "square" => dx.abs() <= r && dy.abs() <= r,
                "disc" => dx * dx + dy * dy <= r * r,
                "cross" => {
                    (dx.abs() <= r / 3 && dy.abs() <= r) || (dy.abs() <= r / 3 && dx.abs() <= r)
                }
                _ => dy.abs() <= r / 3 && dx.abs() <= r,
            };
            if inside {
                px[((y * 32 + x) * 3) as usize..][..3].copy_from_slice(&rgb);
            }
        }
    }
    px
}

/// The 16 (colour, size) variants of shape `t`: (colour name, size name, pixels, caption).
pub fn variants(t: usize) -> Vec<(&'static str, &'static str, Vec<u8>, String)> {
    let mut out = Vec::new();
    for (cname, rgb) in COLORS {
        for (sname, r) in SIZES {
            out.push((
                cname,
                sname,
                draw(SHAPES[t], rgb, r),
                format!("a {sname} {cname} {}", SHAPES[t]),
            ));
        }
    }
    out
}
