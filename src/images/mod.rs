//! Decoding user-supplied images into the fixed-size RGB the vision encoder expects.
//!
//! Images arrive from API users, so every step is defensive: the byte size is checked
//! before parsing, the pixel dimensions are read from the header and checked before any
//! pixel buffer is allocated (a few-kilobyte PNG can claim gigapixels), and every
//! failure becomes an [`ImageError`] whose message can be shown to the user verbatim.
//! Nothing here touches libtorch; the engine turns the bytes into tensors.

use std::io::Cursor;

use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageFormat, ImageReader, Limits, RgbImage, RgbaImage};

/// Bounds on what [`decode_rgb`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest encoded size accepted, in bytes.
    pub max_bytes: usize,
    /// Largest width accepted, in pixels.
    pub max_width: u32,
    /// Largest height accepted, in pixels.
    pub max_height: u32,
}

impl Default for ImageLimits {
    /// 16 MiB and 4096×4096: comfortably above phone photos, while the largest accepted
    /// image decodes to at most 64 MiB of 8-bit RGBA.
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024 * 1024,
            max_width: 4096,
            max_height: 4096,
        }
    }
}

/// Why an image was refused. The messages go back to API users as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// No bytes at all.
    #[error("image is empty (0 bytes)")]
    Empty,
    /// More encoded bytes than [`ImageLimits::max_bytes`].
    #[error("image is {bytes} bytes; the limit is {max} bytes")]
    TooLarge {
        /// Bytes received.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The header declares more pixels than [`ImageLimits`] allows.
    #[error("image is {width}x{height} pixels; the limit is {max_w}x{max_h}")]
    DimensionsTooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// Width limit.
        max_w: u32,
        /// Height limit.
        max_h: u32,
    },
    /// Neither PNG nor JPEG, judged by the leading magic bytes.
    #[error("image format is not supported; send a PNG or JPEG file")]
    UnsupportedFormat,
    /// PNG or JPEG by its magic bytes, but corrupt or truncated.
    #[error("image could not be decoded: {0}")]
    Undecodable(String),
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
const JPEG_MAGIC: &[u8] = &[0xFF, 0xD8, 0xFF];

/// `"png"` or `"jpeg"` if `bytes` starts with that format's magic bytes, else `None`.
///
/// The content decides, never a file name or a client-declared MIME type, since both
/// are easy to get wrong.
pub fn sniff_format(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(PNG_MAGIC) {
        Some("png")
    } else if bytes.starts_with(JPEG_MAGIC) {
        Some("jpeg")
    } else {
        None
    }
}

/// Decodes a PNG or JPEG and returns it as `size × size` RGB, `size * size * 3` bytes in
/// row-major HWC order.
///
/// Transparency is composited onto white, the background such images (emoji, logos,
/// cut-outs) are drawn to be seen on; dropping alpha instead would expose whatever
/// colour the transparent pixels happen to hold, often black. Compositing happens
/// before resizing so that hidden colours cannot bleed into visible edges.
///
/// The image is stretched to a square with a triangle (bilinear) filter: aspect ratio is
/// **not** preserved, matching the plain resize of the training pipeline, so that user
/// images are seen the way training images were. `size == 0` yields an empty vector.
///
/// # Errors
///
/// In the order checked: [`ImageError::Empty`], [`ImageError::TooLarge`],
/// [`ImageError::UnsupportedFormat`], [`ImageError::DimensionsTooLarge`] (from the
/// header, before any pixel is decoded), [`ImageError::Undecodable`].
pub fn decode_rgb(bytes: &[u8], limits: &ImageLimits, size: u32) -> Result<Vec<u8>, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooLarge {
            bytes: bytes.len(),
            max: limits.max_bytes,
        });
    }
    if sniff_format(bytes).is_none() {
        return Err(ImageError::UnsupportedFormat);
    }

    let reader = || -> Result<ImageReader<Cursor<&[u8]>>, ImageError> {
        let reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ImageError::Undecodable(e.to_string()))?;
        match reader.format() {
            Some(ImageFormat::Png | ImageFormat::Jpeg) => Ok(reader),
            _ => Err(ImageError::UnsupportedFormat),
        }
    };

    // Read the header alone first, so an oversized image is refused with its real
    // dimensions instead of the decoder's generic limit error.
    let (width, height) = reader()?.into_dimensions().map_err(undecodable)?;
    if width > limits.max_width || height > limits.max_height {
        return Err(ImageError::DimensionsTooLarge {
            width,
            height,
            max_w: limits.max_width,
            max_h: limits.max_height,
        });
    }

    // The decoder enforces the same bounds again, and the default allocation cap, so
    // that a header lying about its size still cannot make it allocate without bound.
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_width);
    decoder_limits.max_image_height = Some(limits.max_height);
    let mut reader = reader()?;
    reader.limits(decoder_limits);
    let decoded = reader.decode().map_err(undecodable)?;

    let rgb = flatten_onto_white(decoded);
    let resized = if rgb.dimensions() == (size, size) {
        rgb
    } else {
        imageops::resize(&rgb, size, size, FilterType::Triangle)
    };
    Ok(resized.into_raw())
}

/// Decoder failures are reported with the decoder's own words, which name the defect.
fn undecodable(e: image::ImageError) -> ImageError {
    ImageError::Undecodable(e.to_string())
}

/// Drops alpha by compositing onto white; images without alpha are only converted.
fn flatten_onto_white(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba: RgbaImage = image.into_rgba8();
    let (width, height) = rgba.dimensions();
    RgbImage::from_fn(width, height, |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        image::Rgb([r, g, b].map(|c| over_white(c, a)))
    })
}

/// `c · a + 255 · (1 − a)` in 8-bit fixed point, rounded to nearest.
fn over_white(c: u8, alpha: u8) -> u8 {
    let (c, a) = (u32::from(c), u32::from(alpha));
    let blended = (c * a + 255 * (255 - a) + 127) / 255;
    // At most (255 · 255 + 127) / 255 = 255, so the narrowing is lossless.
    blended as u8
}

#[cfg(test)]
mod tests;
