//! Sizes and their display: the binary units fixtures are specified in, the decimal MB the
//! throughput columns use, and the human-readable size every note and table prints. A leaf
//! module: cases, fixtures and the report all depend on it, it depends on nothing.

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
pub const TIB: u64 = 1024 * GIB;

/// The decimal megabyte of the MB/s columns.
pub const MB: f64 = 1_000_000.0;

/// Human-readable binary size.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(4 * TIB), "4.0 TiB");
        assert_eq!(bytes(8 * GIB + 512 * MIB), "8.5 GiB");
    }
}
