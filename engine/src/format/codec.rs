//! Decoding of compressed clusters/grains, with a hard output cap (no compression bombs) and
//! bounded memory (zstd window sizes are checked before the decoder allocates).

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use flate2::{Decompress, FlushDecompress, Status};

use super::error::{ImageError, ImageResult};
use super::source::ImageSource;
use crate::plan::{Codec, Op, Plan};

/// Largest decoded unit any reader emits (qcow2's largest cluster, 2 MiB).
pub const MAX_UNIT: usize = 2 << 20;

/// Largest zstd window accepted (qemu compresses one cluster per frame).
pub const MAX_ZSTD_WINDOW: u64 = 8 << 20;

/// Decodes `input` (one compressed cluster or grain, possibly followed by padding) and keeps
/// the first `out.len()` bytes.
///
/// The stream must yield at least `out.len()` bytes. It may yield more only up to
/// [`MAX_UNIT`] in total: the last cluster of an image whose size is not cluster aligned is
/// stored whole and cut by the plan. Work and memory stay bounded either way; the exact "not
/// beyond its cluster" rule needs the unit: [`decode_limited`] with the cluster or grain size
/// (as the pipeline does with [`crate::plan::Plan::unit`], and [`verify_compressed`]).
pub fn decode(codec: Codec, input: &[u8], out: &mut [u8]) -> ImageResult<()> {
    decode_limited(codec, input, out, MAX_UNIT.max(out.len()))
}

/// Like [`decode`] with an explicit cap on the whole decoded stream (`limit >= out.len()`).
pub fn decode_limited(codec: Codec, input: &[u8], out: &mut [u8], limit: usize) -> ImageResult<()> {
    let limit = limit.max(out.len());
    let extra = limit - out.len();
    match codec {
        Codec::Deflate => inflate(input, out, extra),
        Codec::Zstd => unzstd(input, out, extra),
    }
}

fn inflate(input: &[u8], out: &mut [u8], extra: usize) -> ImageResult<()> {
    let bad = |reason: String| ImageError::Decode {
        codec: "deflate",
        reason,
    };
    let mut d = Decompress::new(false);
    let status = d
        .decompress(input, out, FlushDecompress::None)
        .map_err(|e| bad(e.to_string()))?;
    let got = d.total_out() as usize;
    if got < out.len() {
        return Err(ImageError::ShortDecode {
            got,
            want: out.len(),
        });
    }
    if status == Status::StreamEnd {
        return Ok(());
    }
    // Output is full but the stream goes on: drain what remains, refusing more than `extra`.
    let mut scratch = [0u8; 4096];
    let mut drained = 0usize;
    loop {
        let in_off = d.total_in() as usize;
        let before = d.total_out();
        let status = d
            .decompress(
                &input[in_off.min(input.len())..],
                &mut scratch,
                FlushDecompress::None,
            )
            .map_err(|e| bad(e.to_string()))?;
        let n = (d.total_out() - before) as usize;
        drained += n;
        if drained > extra {
            return Err(ImageError::Bomb {
                limit: out.len() + extra,
            });
        }
        if status == Status::StreamEnd {
            return Ok(());
        }
        if n == 0 && d.total_in() as usize == in_off {
            // No progress: the input ended before the stream did. qemu accepts a full
            // cluster from a truncated stream; so do we (the cluster is complete).
            return Ok(());
        }
    }
}

/// Window size declared by a zstd frame header, or an error for a malformed header.
fn zstd_window(input: &[u8]) -> ImageResult<u64> {
    let bad = |reason: &str| ImageError::Decode {
        codec: "zstd",
        reason: reason.to_string(),
    };
    if input.len() < 6 || input[..4] != [0x28, 0xb5, 0x2f, 0xfd] {
        return Err(bad("no zstd frame magic"));
    }
    let fhd = input[4];
    let fcs_flag = fhd >> 6;
    let single = fhd & 0x20 != 0;
    if fhd & 0x08 != 0 {
        return Err(bad("reserved frame header bit set"));
    }
    if fhd & 0x03 != 0 {
        return Err(bad("dictionary frames are not supported"));
    }
    if !single {
        let wd = input[5];
        let exp = u64::from(wd >> 3);
        let mantissa = u64::from(wd & 7);
        let base = 1u64 << (10 + exp);
        return Ok(base + (base / 8) * mantissa);
    }
    // Single segment: the window is the frame content size.
    let at = 5;
    let size = match fcs_flag {
        0 => input.get(at).map(|&b| u64::from(b)),
        1 => input
            .get(at..at + 2)
            .map(|b| u64::from(u16::from_le_bytes([b[0], b[1]])) + 256),
        2 => input
            .get(at..at + 4)
            .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        _ => input.get(at..at + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        }),
    };
    size.ok_or_else(|| bad("truncated frame header"))
}

fn unzstd(input: &[u8], out: &mut [u8], extra: usize) -> ImageResult<()> {
    let window = zstd_window(input)?;
    if window > MAX_ZSTD_WINDOW {
        return Err(ImageError::Decode {
            codec: "zstd",
            reason: format!("window of {window} bytes exceeds {MAX_ZSTD_WINDOW}"),
        });
    }
    let bad = |reason: String| ImageError::Decode {
        codec: "zstd",
        reason,
    };
    let mut src = input;
    let mut dec =
        ruzstd::decoding::StreamingDecoder::new(&mut src).map_err(|e| bad(e.to_string()))?;
    let mut got = 0usize;
    while got < out.len() {
        let n = dec.read(&mut out[got..]).map_err(|e| bad(e.to_string()))?;
        if n == 0 {
            return Err(ImageError::ShortDecode {
                got,
                want: out.len(),
            });
        }
        got += n;
    }
    let mut scratch = [0u8; 4096];
    let mut drained = 0usize;
    loop {
        let n = dec.read(&mut scratch).map_err(|e| bad(e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        drained += n;
        if drained > extra {
            return Err(ImageError::Bomb {
                limit: out.len() + extra,
            });
        }
    }
}

/// Decodes every [`Op::Decode`] of `plan` (discarding the output) so that a bomb or a corrupt
/// stream is found before anything is written: each must decode to exactly `unit` bytes (the
/// cluster or grain size; a cut last unit to at least its `len`). Runs on `threads` threads,
/// one unit buffer each.
pub fn verify_compressed<S: ImageSource + Sync + ?Sized>(
    src: &S,
    plan: &Plan,
    unit: u64,
    threads: usize,
) -> ImageResult<()> {
    if unit == 0 || unit > MAX_UNIT as u64 {
        return Err(ImageError::TableTooLarge {
            what: "compressed unit",
            bytes: unit,
            cap: MAX_UNIT as u64,
        });
    }
    let units: Vec<(u64, u64, u64, Codec)> = plan
        .ops
        .iter()
        .filter_map(|op| match *op {
            Op::Decode {
                src,
                src_len,
                len,
                codec,
                ..
            } => Some((src, src_len, len, codec)),
            _ => None,
        })
        .collect();
    if units.is_empty() {
        return Ok(());
    }
    src.prefetch(
        &units
            .iter()
            .map(|&(off, src_len, ..)| (off, src_len))
            .collect::<Vec<_>>(),
    );
    let threads = threads.clamp(1, 64).min(units.len());
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let result: Mutex<ImageResult<()>> = Mutex::new(Ok(()));
    let work = || {
        let mut input = Vec::new();
        let mut out = Vec::new();
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(off, src_len, len, codec)) = units.get(i) else {
                break;
            };
            let r = (|| {
                if src_len > 2 * MAX_UNIT as u64 + 4096 || len > MAX_UNIT as u64 {
                    return Err(ImageError::TableTooLarge {
                        what: "compressed unit",
                        bytes: src_len.max(len),
                        cap: 2 * MAX_UNIT as u64,
                    });
                }
                input.resize(src_len as usize, 0);
                src.read_exact_at(off, &mut input)?;
                out.resize(len as usize, 0);
                decode_limited(codec, &input, &mut out, unit as usize)
            })();
            if let Err(e) = r {
                failed.store(true, Ordering::Relaxed);
                let mut g = result.lock().unwrap_or_else(|p| p.into_inner());
                if g.is_ok() {
                    *g = Err(e);
                }
                break;
            }
        }
    };
    if threads == 1 {
        // No thread for a single worker (also keeps LeakSanitizer quiet in the fuzzers:
        // glibc's per-thread atexit record looks like a leak).
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(work);
            }
        });
    }
    result.into_inner().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::default(), false);
        let mut out = vec![0u8; data.len() + 1024];
        c.compress(data, &mut out, FlushCompress::Finish).unwrap();
        out.truncate(c.total_out() as usize);
        out
    }

    #[test]
    fn deflate_exact_bomb_and_short() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let z = deflate(&data);
        let mut out = vec![0u8; 65536];
        decode(Codec::Deflate, &z, &mut out).unwrap();
        assert_eq!(out, data);
        // trailing garbage after the stream is fine
        let mut zp = z.clone();
        zp.extend_from_slice(&[0xAA; 300]);
        decode(Codec::Deflate, &zp, &mut out).unwrap();
        // a stream that decodes to 1 MiB refused for a 64 KiB cluster
        let bomb = deflate(&vec![0u8; 1 << 20]);
        let e = decode_limited(Codec::Deflate, &bomb, &mut out, 65536).unwrap_err();
        assert!(matches!(e, ImageError::Bomb { .. }), "{e}");
        // decode() caps any stream at MAX_UNIT
        let big = deflate(&vec![0u8; 4 << 20]);
        let e = decode(Codec::Deflate, &big, &mut out).unwrap_err();
        assert!(matches!(e, ImageError::Bomb { .. }), "{e}");
        // too short
        let short = deflate(&data[..1000]);
        let e = decode(Codec::Deflate, &short, &mut out).unwrap_err();
        assert!(matches!(e, ImageError::ShortDecode { .. }), "{e}");
        // tail unit: 3 KiB kept of a 4 KiB stream
        let four = deflate(&data[..4096]);
        let mut tail = vec![0u8; 3072];
        decode(Codec::Deflate, &four, &mut tail).unwrap();
        assert_eq!(tail, data[..3072]);
        // garbage
        assert!(decode(Codec::Deflate, &[0xff; 64], &mut out).is_err());
    }

    #[test]
    fn zstd_window_cap_and_garbage() {
        // magic, FHD without single segment, window descriptor exponent 31 -> 2 TiB window
        let hostile = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xf8, 0, 0, 0, 0];
        let mut out = vec![0u8; 65536];
        let e = decode(Codec::Zstd, &hostile, &mut out).unwrap_err();
        assert!(e.to_string().contains("window"), "{e}");
        assert!(decode(Codec::Zstd, &[1, 2, 3], &mut out).is_err());
        assert!(decode(
            Codec::Zstd,
            &[0x28, 0xb5, 0x2f, 0xfd, 0x20, 4, 0, 0],
            &mut out
        )
        .is_err());
    }
}
