//! LUKS containers (v1, v2): detected so they are never mistaken for plain data formats;
//! copied as raw bytes (the ciphertext), as Cinder reports them "raw".

use super::source::{be16, be32};

pub fn probe(head: &[u8]) -> bool {
    head.len() >= 8 && head[..6] == *b"LUKS\xba\xbe" && matches!(be16(head, 6), 1 | 2)
}

/// Payload offset in bytes (LUKS1 only).
pub fn payload_offset(head: &[u8]) -> Option<u64> {
    (head.len() >= 108 && be16(head, 6) == 1).then(|| u64::from(be32(head, 104)) * 512)
}
