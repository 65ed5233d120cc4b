//! ISO 9660 ("CD001") and UDF ("NSR02", "NSR03") volume descriptor identifiers from sector 16
//! (2 KiB sectors). oslo looks at sector 16 only; UDF puts its NSR descriptor after a "BEA01"
//! there, so sectors 17 and 18 are searched too.

use super::source::{le16, le32};

const OFFSETS: [usize; 3] = [0x8001, 0x8801, 0x9001];

/// Standard identifiers of ISO 9660 and of UDF's volume structure descriptors.
const IDENTIFIERS: [&[u8; 5]; 3] = [b"CD001", b"NSR02", b"NSR03"];

pub fn probe(head: &[u8]) -> bool {
    OFFSETS.iter().any(|&o| {
        head.get(o..o + 5)
            .is_some_and(|id| IDENTIFIERS.iter().any(|want| id == *want))
    })
}

/// Volume space size times logical block size of the primary volume descriptor.
pub fn declared_size(head: &[u8]) -> Option<u64> {
    let pvd = head.get(0x8000..0x8000 + 2048)?;
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return None;
    }
    Some(u64::from(le32(pvd, 80)) * u64::from(le16(pvd, 128)))
}
