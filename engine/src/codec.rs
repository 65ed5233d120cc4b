//! Decoding compressed image clusters, with the output bounded to exactly the cluster.

use crate::plan::Codec;

/// Decodes `input` with `codec` into `out`, which must be filled exactly. Input that would
/// expand beyond `out` (a decompression bomb) or stop short of it is an error.
///
/// Delegates to [`crate::format::codec::decode`] (images helper): it also caps zstd window
/// sizes before the decoder allocates, drains deflate streams to catch bombs that fill `out`
/// exactly, and accepts the last cluster of an image cut by its virtual size.
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
        // Expands beyond the cluster: refused.
        let mut small = vec![0u8; 4096];
        assert!(decode(Codec::Deflate, &packed, &mut small).is_err());
        // Garbage: refused.
        assert!(decode(Codec::Deflate, &[0xff; 64], &mut out).is_err());
    }
}
