//! Fast all-zero test for buffers, used by zero detection on the copy path.
//!
//! The test must never be the bottleneck of a copy, so it runs at memory bandwidth: the buffer
//! is read in 256-byte blocks, each OR-reduced over 16-byte words into one accumulator, a form
//! LLVM turns into wide vector loads and ORs; a nonzero block ends the scan early. Before the
//! bulk scan, the first 16 bytes are checked on their own so that typical data (nonzero near
//! the start) is rejected immediately. No unsafe code: words are read with `from_ne_bytes` over
//! `chunks_exact`, which compiles to plain unaligned loads.

/// Bytes OR-reduced per early-exit check.
const BLOCK: usize = 256;
/// Word width of the reduction.
const WORD: usize = 16;

/// Whether every byte of `buf` is zero (true for an empty buffer).
#[inline]
pub fn is_zero(buf: &[u8]) -> bool {
    // Quick reject: most data blocks have a nonzero byte near the start.
    let head = buf.len().min(WORD);
    if !is_zero_bytewise(&buf[..head]) {
        return false;
    }
    let mut blocks = buf.chunks_exact(BLOCK);
    for block in &mut blocks {
        if !block_is_zero(block) {
            return false;
        }
    }
    let rest = blocks.remainder();
    let mut words = rest.chunks_exact(WORD);
    let mut acc = 0u128;
    for w in &mut words {
        acc |= word(w);
    }
    acc == 0 && is_zero_bytewise(words.remainder())
}

/// One full block, OR-reduced without branches so it vectorizes.
#[inline(always)]
fn block_is_zero(block: &[u8]) -> bool {
    let mut acc = 0u128;
    for w in block.chunks_exact(WORD) {
        acc |= word(w);
    }
    acc == 0
}

#[inline(always)]
fn word(w: &[u8]) -> u128 {
    let mut a = [0u8; WORD];
    a.copy_from_slice(w);
    u128::from_ne_bytes(a)
}

#[inline(always)]
fn is_zero_bytewise(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a | x) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_small() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0]));
        assert!(!is_zero(&[1]));
        assert!(is_zero(&[0; 15]));
        assert!(is_zero(&[0; 17]));
    }

    #[test]
    fn nonzero_byte_at_every_position_and_every_start() {
        // Covers the head check, full blocks, the word tail and the byte tail, at every
        // alignment of the slice start.
        let mut buf = vec![0u8; 1200];
        for start in 0..32 {
            for len in [
                0usize, 1, 15, 16, 17, 255, 256, 257, 300, 511, 512, 513, 1100,
            ] {
                let s = &mut buf[start..start + len];
                assert!(is_zero(s), "start {start} len {len}");
                for pos in 0..len {
                    for val in [1u8, 0x80, 0xff] {
                        s[pos] = val;
                        assert!(!is_zero(s), "start {start} len {len} pos {pos} val {val}");
                        s[pos] = 0;
                    }
                }
            }
        }
        // Bytes just outside the slice do not count.
        buf[99] = 1;
        buf[300] = 1;
        assert!(is_zero(&buf[100..300]));
    }

    #[test]
    fn large_buffer() {
        let mut buf = vec![0u8; 1 << 20];
        assert!(is_zero(&buf));
        buf[(1 << 20) - 1] = 1;
        assert!(!is_zero(&buf));
        buf[(1 << 20) - 1] = 0;
        buf[1 << 19] = 2;
        assert!(!is_zero(&buf));
    }
}
