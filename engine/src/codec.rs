//! Decoding compressed image clusters, with the output bounded to exactly the cluster.

use crate::plan::Codec;

/// Decodes `input` with `codec` into `out`, which must be filled exactly. Input that would
/// expand beyond `out` (a decompression bomb) or stop short of it is an error.
pub fn decode(codec: Codec, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    match codec {
        Codec::Deflate => inflate_raw(input, out),
        Codec::Zstd => unzstd(input, out),
    }
}

fn inflate_raw(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut d = Decompress::new(false);
    let status = d
        .decompress(input, out, FlushDecompress::Finish)
        .map_err(|e| format!("deflate data is corrupt: {e}"))?;
    let produced = d.total_out() as usize;
    if produced != out.len() {
        return Err(format!(
            "deflate data decodes to {produced} bytes, expected {}",
            out.len()
        ));
    }
    if status != Status::StreamEnd {
        // The cluster is full but the stream has not ended: one more byte of output means the
        // data expands beyond the cluster (a bomb). qcow2's sector padding after the end of the
        // stream produces nothing.
        let mut extra = [0u8; 1];
        let rest = &input[d.total_in() as usize..];
        d.decompress(rest, &mut extra, FlushDecompress::Finish)
            .map_err(|e| format!("deflate data is corrupt: {e}"))?;
        if d.total_out() as usize > produced {
            return Err(format!("deflate data expands beyond {} bytes", out.len()));
        }
    }
    Ok(())
}

fn unzstd(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    use std::io::Read;
    let mut src = input;
    let mut dec = ruzstd::decoding::StreamingDecoder::new(&mut src)
        .map_err(|e| format!("zstd header is corrupt: {e}"))?;
    dec.read_exact(out)
        .map_err(|e| format!("zstd data does not decode to {} bytes: {e}", out.len()))?;
    // One byte more would be past the cluster: a bomb, refused (the decoder stops after it).
    let mut extra = [0u8; 1];
    match dec.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err(format!("zstd data expands beyond {} bytes", out.len())),
        Err(e) => Err(format!("zstd data is corrupt: {e}")),
    }
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
