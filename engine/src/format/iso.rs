//! ISO 9660: "CD001" volume descriptor identifiers from sector 16 (2 KiB sectors).

use super::source::{le16, le32};

const OFFSETS: [usize; 3] = [0x8001, 0x8801, 0x9001];

pub fn probe(head: &[u8]) -> bool {
    OFFSETS
        .iter()
        .any(|&o| head.get(o..o + 5).is_some_and(|id| id == b"CD001"))
}

/// Volume space size times logical block size of the primary volume descriptor.
pub fn declared_size(head: &[u8]) -> Option<u64> {
    let pvd = head.get(0x8000..0x8000 + 2048)?;
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return None;
    }
    Some(u64::from(le32(pvd, 80)) * u64::from(le16(pvd, 128)))
}
