//! Partitioned raw disks: any first sector ending in the boot signature 0x55AA (that is not a
//! FAT boot sector) is a partition table, as oslo's inspector sees it: an MBR, or GPT behind a
//! protective MBR. Both are raw data; they are detected so that a file that is also another
//! format (format confusion) is caught, and their entries are checked as oslo checks them.

/// What the first sector says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioned {
    Gpt,
    Mbr,
}

/// Partition type of a GPT protective MBR entry.
const PROTECTIVE: u8 = 0xee;

/// The four primary partition entries of a first sector of 512 bytes.
fn entries(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s[446..510].chunks_exact(16)
}

/// A FAT volume boot record carries the same signature; two FATs on a fixed disk (media
/// descriptor 0xF8) mark it as a filesystem, not a partition table (oslo's rule).
fn is_fat_boot_sector(s: &[u8]) -> bool {
    s[0x10] == 2 && s[0x15] == 0xf8
}

/// Classifies the first sector; `None` when it is no partition table.
pub fn probe(head: &[u8]) -> Option<Partitioned> {
    let s = head.get(..512)?;
    if s[510..512] != [0x55, 0xaa] || is_fat_boot_sector(s) {
        return None;
    }
    if entries(s).any(|e| e[4] == PROTECTIVE) {
        Some(Partitioned::Gpt)
    } else {
        Some(Partitioned::Mbr)
    }
}

/// oslo's "mbr" safety check of a partition table: every boot flag is 0x00 or 0x80, at least
/// one partition is defined, and a protective GPT entry is the first and only one, starting at
/// CHS 0/0/2 and LBA 1. Returns the first violation.
pub fn check_entries(head: &[u8]) -> Result<(), String> {
    let s = head
        .get(..512)
        .ok_or_else(|| "shorter than one sector".to_string())?;
    let mut used = Vec::new();
    let mut protective = false;
    for (i, e) in entries(s).enumerate() {
        if e[0] != 0x00 && e[0] != 0x80 {
            return Err(format!("entry {i} has boot flag {:#04x}", e[0]));
        }
        if e[4] != 0 {
            used.push(i);
        }
        if e[4] == PROTECTIVE {
            protective = true;
            if e[1..4] != [0x00, 0x02, 0x00] {
                return Err(format!(
                    "protective entry {i} starts at CHS {:02x}{:02x}{:02x}, not 000200",
                    e[1], e[2], e[3]
                ));
            }
            let lba = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
            if lba != 1 {
                return Err(format!("protective entry {i} starts at LBA {lba}, not 1"));
            }
        }
    }
    if protective && used != [0] {
        return Err("a protective GPT entry must be the first and only partition".into());
    }
    if used.is_empty() {
        return Err("no partition is defined".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sector(entries: &[(usize, [u8; 16])]) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[510] = 0x55;
        s[511] = 0xaa;
        for (i, e) in entries {
            s[446 + i * 16..446 + (i + 1) * 16].copy_from_slice(e);
        }
        s
    }

    fn entry(boot: u8, chs: [u8; 3], kind: u8, lba: u32) -> [u8; 16] {
        let mut e = [0u8; 16];
        e[0] = boot;
        e[1..4].copy_from_slice(&chs);
        e[4] = kind;
        e[8..12].copy_from_slice(&lba.to_le_bytes());
        e[12..16].copy_from_slice(&100u32.to_le_bytes());
        e
    }

    #[test]
    fn signature_alone_is_a_partition_table() {
        let empty = sector(&[]);
        assert_eq!(probe(&empty), Some(Partitioned::Mbr));
        assert!(check_entries(&empty).unwrap_err().contains("no partition"));
        let mut fat = empty.clone();
        fat[0x10] = 2;
        fat[0x15] = 0xf8;
        assert_eq!(probe(&fat), None);
        assert_eq!(probe(&empty[..511]), None);
    }

    #[test]
    fn oslo_entry_rules() {
        let linux = sector(&[(0, entry(0x80, [1, 1, 0], 0x83, 2048))]);
        assert_eq!(probe(&linux), Some(Partitioned::Mbr));
        check_entries(&linux).unwrap();
        let flag = sector(&[(1, entry(0x17, [1, 1, 0], 0x83, 2048))]);
        assert!(check_entries(&flag).unwrap_err().contains("boot flag"));
        let good = sector(&[(0, entry(0, [0, 2, 0], 0xee, 1))]);
        assert_eq!(probe(&good), Some(Partitioned::Gpt));
        check_entries(&good).unwrap();
        let chs = sector(&[(0, entry(0, [0, 1, 0], 0xee, 1))]);
        assert!(check_entries(&chs).unwrap_err().contains("CHS"));
        let lba = sector(&[(0, entry(0, [0, 2, 0], 0xee, 2))]);
        assert!(check_entries(&lba).unwrap_err().contains("LBA"));
        let second = sector(&[(1, entry(0, [0, 2, 0], 0xee, 1))]);
        assert!(check_entries(&second).unwrap_err().contains("only"));
        let extra = sector(&[
            (0, entry(0, [0, 2, 0], 0xee, 1)),
            (2, entry(0, [1, 1, 0], 0x83, 2048)),
        ]);
        assert!(check_entries(&extra).unwrap_err().contains("only"));
    }
}
