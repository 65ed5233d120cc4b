//! Partitioned raw disks: an MBR (boot signature 0x55AA, sane partition entries), and GPT
//! behind a protective MBR. Both are raw data; they are detected so that a file that is also
//! another format (format confusion) is caught.

/// What the first sector says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioned {
    Gpt,
    Mbr,
}

/// Classifies the first sector; `None` when it is no partition table.
pub fn probe(head: &[u8]) -> Option<Partitioned> {
    let s = head.get(..512)?;
    if s[510] != 0x55 || s[511] != 0xaa {
        return None;
    }
    let mut any = false;
    let mut protective = false;
    for i in 0..4 {
        let e = &s[446 + i * 16..446 + (i + 1) * 16];
        if e[0] != 0 && e[0] != 0x80 {
            return None;
        }
        if e[4] != 0 {
            any = true;
        }
        if e[4] == 0xee {
            protective = true;
        }
    }
    match (any, protective) {
        (_, true) => Some(Partitioned::Gpt),
        (true, false) => Some(Partitioned::Mbr),
        _ => None,
    }
}

/// oslo's GPT "mbr" safety check: the protective entry must be the only one and start at
/// LBA 1.
pub fn protective_mbr_ok(head: &[u8]) -> bool {
    let Some(s) = head.get(..512) else {
        return false;
    };
    let mut count = 0;
    let mut ok = true;
    for i in 0..4 {
        let e = &s[446 + i * 16..446 + (i + 1) * 16];
        if e[4] == 0 {
            continue;
        }
        count += 1;
        let lba = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
        ok &= e[4] == 0xee && lba == 1;
    }
    ok && count == 1
}
