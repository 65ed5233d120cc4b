//! Decoding compressed image clusters, with the output bounded to exactly the cluster.

use crate::plan::Codec;

/// Decodes `input` with `codec` into `out`, which must be filled. Input that stops short of
/// it is an error; so is a stream that decodes to more than `unit` bytes in all (a bomb: the
/// image's cluster or grain size; 0 caps at [`crate::format::codec::MAX_UNIT`], the largest
/// unit of any format). A cut last unit (`out` shorter than `unit`) keeps its first bytes.
///
/// Delegates to [`crate::format::codec::decode_limited`] (images helper), which also caps
/// zstd window sizes before the decoder allocates.
pub fn decode(codec: Codec, input: &[u8], out: &mut [u8], unit: u64) -> Result<(), String> {
    let cap = crate::format::codec::MAX_UNIT as u64;
    let limit = if unit == 0 { cap } else { unit.min(cap) } as usize;
    crate::format::codec::decode_limited(codec, input, out, limit).map_err(|e| e.to_string())
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
        decode(Codec::Deflate, &packed, &mut out, 0).unwrap();
        assert_eq!(out, data);
        // Expands beyond the 2 MiB cap: refused.
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&vec![0u8; 4 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(decode(Codec::Deflate, &bomb, &mut out, 0).is_err());
        // Within the general cap but beyond the plan's 64 KiB unit: refused only with the unit.
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&vec![7u8; 128 << 10]).unwrap();
        let double = enc.finish().unwrap();
        decode(Codec::Deflate, &double, &mut out, 0).unwrap();
        let e = decode(Codec::Deflate, &double, &mut out, 65536).unwrap_err();
        assert!(e.contains("bomb"), "{e}");
        // A cut last unit (3 KiB kept of a 64 KiB cluster) is fine under the unit.
        let mut tail = vec![0u8; 3072];
        decode(Codec::Deflate, &packed, &mut tail, 65536).unwrap();
        assert_eq!(tail, data[..3072]);
        // Garbage: refused.
        assert!(decode(Codec::Deflate, &[0xff; 64], &mut out, 0).is_err());
    }
}
