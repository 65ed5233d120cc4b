//! LUKS containers: detected by magic alone (as oslo does) so they are never mistaken for plain
//! data formats; versions 1 and 2 are copied as raw bytes (the ciphertext), as Cinder reports
//! them "raw"; any other version is refused.

use super::source::{be16, be32};

pub fn probe(head: &[u8]) -> bool {
    head.starts_with(b"LUKS\xba\xbe")
}

/// The header's version field (0 when the header is cut short).
pub fn version(head: &[u8]) -> u16 {
    if head.len() >= 8 {
        be16(head, 6)
    } else {
        0
    }
}

/// Payload offset in bytes (LUKS1 only).
pub fn payload_offset(head: &[u8]) -> Option<u64> {
    (head.len() >= 108 && version(head) == 1).then(|| u64::from(be32(head, 104)) * 512)
}
