//! Decoding compressed image clusters, with the output bounded to exactly the cluster.

use crate::plan::Codec;

/// Decodes `input` with `codec` into `out`, which must be filled. Input that stops short of
/// it is an error; output beyond `out` is discarded and capped (bomb) at
/// [`crate::format::codec::MAX_UNIT`].
///
/// Delegates to [`crate::format::codec::decode`] (images helper): it also caps zstd window
/// sizes before the decoder allocates, and accepts the last cluster of an image cut by its
/// virtual size. The exact per-cluster bomb rule is checked by
/// [`crate::format::verify_compressed`] before an image is written.
pub fn decode(codec: Codec, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    crate::format::codec::decode(codec, input, out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn deflate_round_trip_and_bomb() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        let packed = enc.finish().unwrap();
        let mut out = vec![0u8; 65536];
        decode(Codec::Deflate, &packed, &mut out).unwrap();
        assert_eq!(out, data);
        // Expands beyond the 2 MiB cap: refused.
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&vec![0u8; 4 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(decode(Codec::Deflate, &bomb, &mut out).is_err());
        // Garbage: refused.
        assert!(decode(Codec::Deflate, &[0xff; 64], &mut out).is_err());
    }
}
