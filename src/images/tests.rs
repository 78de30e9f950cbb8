//! Tests of image decoding, on images encoded in memory with the `image` crate.

use super::*;
use image::codecs::jpeg::JpegEncoder;
use image::{ImageEncoder, Rgb, Rgba};

fn png(image: &DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn jpeg(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 95)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

fn decode(bytes: &[u8], size: u32) -> Result<Vec<u8>, ImageError> {
    decode_rgb(bytes, &ImageLimits::default(), size)
}

#[test]
fn sniffs_png_and_jpeg() {
    let tiny = RgbImage::from_pixel(1, 1, Rgb([1, 2, 3]));
    assert_eq!(sniff_format(&png(&tiny.clone().into())), Some("png"));
    assert_eq!(sniff_format(&jpeg(&tiny)), Some("jpeg"));
    assert_eq!(sniff_format(b"GIF89a"), None);
    assert_eq!(sniff_format(&[0xFF, 0xD8]), None);
    assert_eq!(sniff_format(&[]), None);
}

#[test]
fn png_at_target_size_is_returned_unchanged() {
    let image = RgbImage::from_fn(2, 2, |x, y| Rgb([x as u8, y as u8, 7]));
    let rgb = decode(&png(&image.clone().into()), 2).unwrap();
    assert_eq!(rgb, image.into_raw());
}

#[test]
fn transparent_pixels_become_white() {
    // Left pixel fully transparent (hidden colour black), right one opaque red,
    // bottom-left half-transparent blue, bottom-right transparent green.
    let mut image = RgbaImage::new(2, 2);
    image.put_pixel(0, 0, Rgba([0, 0, 0, 0]));
    image.put_pixel(1, 0, Rgba([255, 0, 0, 255]));
    image.put_pixel(0, 1, Rgba([0, 0, 255, 128]));
    image.put_pixel(1, 1, Rgba([0, 255, 0, 0]));
    let rgb = decode(&png(&image.into()), 2).unwrap();
    // Half-transparent blue over white: (0·128 + 255·127 + 127) / 255 = 127.
    #[rustfmt::skip]
    let expected = [
        255, 255, 255,   255, 0, 0,
        127, 127, 255,   255, 255, 255,
    ];
    assert_eq!(rgb, expected);
}

#[test]
fn transparent_image_resizes_to_white() {
    // Alpha is removed before resizing, so the hidden black cannot bleed in.
    let image = RgbaImage::from_pixel(7, 5, Rgba([0, 0, 0, 0]));
    let rgb = decode(&png(&image.into()), 4).unwrap();
    assert_eq!(rgb, vec![255; 4 * 4 * 3]);
}

#[test]
fn resizes_2x3_to_4x4_without_keeping_aspect() {
    // Top row red, the others blue: after stretching, the first output row is still
    // red-dominated and the last pure blue.
    let image = RgbImage::from_fn(2, 3, |_, y| {
        if y == 0 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    });
    let rgb = decode(&png(&image.into()), 4).unwrap();
    assert_eq!(rgb.len(), 4 * 4 * 3);
    let pixel = |x: usize, y: usize| &rgb[(y * 4 + x) * 3..(y * 4 + x) * 3 + 3];
    for x in 0..4 {
        assert!(pixel(x, 0)[0] > pixel(x, 0)[2], "{:?}", pixel(x, 0));
        assert_eq!(pixel(x, 3), [0, 0, 255]);
    }
}

#[test]
fn decodes_jpeg() {
    let image = RgbImage::from_pixel(16, 8, Rgb([200, 100, 50]));
    let rgb = decode(&jpeg(&image), 8).unwrap();
    assert_eq!(rgb.len(), 8 * 8 * 3);
    // JPEG is lossy: allow a small error on a flat colour.
    for px in rgb.chunks_exact(3) {
        for (got, want) in px.iter().zip([200u8, 100, 50]) {
            assert!(got.abs_diff(want) <= 3, "{px:?}");
        }
    }
}

#[test]
fn grayscale_with_alpha_is_flattened() {
    let image = image::GrayAlphaImage::from_pixel(1, 1, image::LumaA([0, 0]));
    assert_eq!(decode(&png(&image.into()), 1).unwrap(), [255, 255, 255]);
}

#[test]
fn zero_size_gives_empty_output() {
    let image = RgbImage::from_pixel(3, 3, Rgb([9, 9, 9]));
    assert_eq!(decode(&png(&image.into()), 0).unwrap(), Vec::<u8>::new());
}

#[test]
fn empty_is_refused() {
    assert_eq!(decode(&[], 4), Err(ImageError::Empty));
}

#[test]
fn too_many_bytes_is_refused_before_parsing() {
    let limits = ImageLimits {
        max_bytes: 10,
        ..ImageLimits::default()
    };
    // Not even an image: the size check comes first.
    let err = decode_rgb(&[0u8; 11], &limits, 4).unwrap_err();
    assert_eq!(err, ImageError::TooLarge { bytes: 11, max: 10 });
    assert_eq!(err.to_string(), "image is 11 bytes; the limit is 10 bytes");
}

#[test]
fn random_bytes_are_unsupported() {
    // A fixed xorshift stream: deterministic "random" bytes with no magic prefix.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let bytes: Vec<u8> = (0..256)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    assert_eq!(sniff_format(&bytes), None);
    assert_eq!(decode(&bytes, 4), Err(ImageError::UnsupportedFormat));
}

#[test]
fn other_formats_are_unsupported() {
    assert_eq!(
        decode(b"GIF89a\x01\x00\x01\x00", 4),
        Err(ImageError::UnsupportedFormat)
    );
    assert_eq!(decode(b"BM\x00\x00", 4), Err(ImageError::UnsupportedFormat));
}

#[test]
fn truncated_png_is_undecodable() {
    let image = RgbImage::from_fn(32, 32, |x, y| Rgb([x as u8 * 8, y as u8 * 8, 0]));
    let bytes = png(&image.into());
    // Past the header (dimensions readable) but inside the pixel data.
    let cut = &bytes[..bytes.len() / 2];
    assert!(matches!(decode(cut, 4), Err(ImageError::Undecodable(_))));
    // Only the magic bytes and part of IHDR.
    assert!(matches!(
        decode(&bytes[..12], 4),
        Err(ImageError::Undecodable(_))
    ));
}

#[test]
fn truncated_jpeg_is_undecodable() {
    let bytes = jpeg(&RgbImage::from_pixel(8, 8, Rgb([1, 2, 3])));
    assert!(matches!(
        decode(&bytes[..4], 4),
        Err(ImageError::Undecodable(_))
    ));
}

#[test]
fn oversized_dimensions_are_refused_from_the_header() {
    // 5000×1 is cheap to encode but wider than the default 4096.
    let wide = png(&RgbImage::new(5000, 1).into());
    let err = decode(&wide, 4).unwrap_err();
    assert_eq!(
        err,
        ImageError::DimensionsTooLarge {
            width: 5000,
            height: 1,
            max_w: 4096,
            max_h: 4096
        }
    );
    assert_eq!(
        err.to_string(),
        "image is 5000x1 pixels; the limit is 4096x4096"
    );
    // Height is checked too, and a JPEG header as well as a PNG one.
    let limits = ImageLimits {
        max_height: 4,
        ..ImageLimits::default()
    };
    let tall = jpeg(&RgbImage::new(2, 9));
    assert!(matches!(
        decode_rgb(&tall, &limits, 4),
        Err(ImageError::DimensionsTooLarge { height: 9, .. })
    ));
}

/// Bitwise CRC-32 (ISO-HDLC, as PNG uses), to re-sign a patched chunk.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn decompression_bomb_header_is_refused_without_decoding() {
    // A real 1x1 PNG whose IHDR is patched (and re-signed) to claim 100000x100000,
    // 40 GB of RGBA. The claim alone must be enough to refuse it.
    let mut bytes = png(&RgbImage::new(1, 1).into());
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        decode(&bytes, 4),
        Err(ImageError::DimensionsTooLarge {
            width: 100_000,
            height: 100_000,
            max_w: 4096,
            max_h: 4096
        })
    );
}

#[test]
fn crc32_matches_the_encoder() {
    let bytes = png(&RgbImage::new(3, 2).into());
    assert_eq!(crc32(&bytes[12..29]).to_be_bytes(), bytes[29..33]);
}

#[test]
fn default_limits() {
    let limits = ImageLimits::default();
    assert_eq!(limits.max_bytes, 16 << 20);
    assert_eq!((limits.max_width, limits.max_height), (4096, 4096));
}

#[test]
fn over_white_endpoints() {
    assert_eq!(over_white(0, 0), 255);
    assert_eq!(over_white(123, 255), 123);
    assert_eq!(over_white(0, 255), 0);
    assert_eq!(over_white(255, 0), 255);
}
