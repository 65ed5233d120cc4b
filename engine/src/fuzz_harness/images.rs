//! Image parser fuzz harnesses (targets `image_detect`, `image_qcow2`, `image_vmdk`).
//!
//! Each feeds arbitrary bytes through the real entry points. Whatever they accept must be a
//! well-formed plan: ops ascending, disjoint, inside the virtual size, every source range
//! inside the input; every compressed op must decode within its bounds (the first few are
//! decoded). Any violation panics, which the fuzzer reports as a crash.

use crate::format::{self, qcow2, vmdk, InspectOptions, Reader};
use crate::plan::{Op, Plan};

/// Virtual-size cap for fuzzing: big enough for real headers, small enough that a plan of
/// zero clusters stays cheap.
const MAX_VIRTUAL: u64 = 1 << 40;
/// Compressed ops decoded per input.
const MAX_DECODES: usize = 16;

fn opts(declared: Option<format::Format>) -> InspectOptions {
    InspectOptions {
        declared,
        max_virtual_size: MAX_VIRTUAL,
    }
}

/// Checks an accepted plan against the input it came from.
pub fn check_plan(plan: &Plan, data: &[u8]) {
    if let Err(e) = plan.validate() {
        panic!("accepted plan is invalid: {e}");
    }
    let len = data.len() as u64;
    let mut decodes = 0;
    for op in &plan.ops {
        match *op {
            Op::Copy { src, len: l, .. } => {
                assert!(src + l <= len, "copy source {src}+{l} past input end {len}");
            }
            Op::Decode {
                src,
                src_len,
                len: l,
                codec,
                ..
            } => {
                assert!(src + src_len <= len, "decode source past input end");
                assert!(l <= format::codec::MAX_UNIT as u64, "decode unit too large");
                if decodes < MAX_DECODES {
                    decodes += 1;
                    let mut out = vec![0u8; l as usize];
                    let _ = format::decode(
                        codec,
                        &data[src as usize..(src + src_len) as usize],
                        &mut out,
                    );
                }
            }
            Op::Zero { .. } => {}
            Op::Skip { .. } => panic!("image plans never skip"),
        }
    }
}

/// `image_detect`: detection and inspection of arbitrary bytes, auto and declared.
pub fn image_detect(data: &[u8]) {
    let _ = format::detect(data);
    let r = format::inspect(data, &opts(None)).expect("slices never fail to read");
    assert_eq!(r.file_size, data.len() as u64);
    assert_eq!(r.safe, r.reasons.is_empty());
    for declared in [
        None,
        Some(format::Format::Raw),
        Some(format::Format::Qcow2),
        Some(format::Format::Vmdk),
    ] {
        if let Ok(a) = format::analyze(data, &opts(declared)) {
            if let Some(d) = declared {
                assert!(a.format == d, "declared {d} accepted as {}", a.format);
            }
            if let Reader::Native(plan) = &a.reader {
                check_plan(plan, data);
                if let Some(unit) = a.cluster_size {
                    let _ = format::verify_compressed(data, plan, unit, 1);
                }
            }
        }
    }
}

/// `image_qcow2`: header parse and full table walk.
pub fn image_qcow2(data: &[u8]) {
    let Ok(h) = qcow2::parse_header(data, MAX_VIRTUAL) else {
        return;
    };
    assert!((9..=21).contains(&h.cluster_bits));
    assert!(h.size <= MAX_VIRTUAL);
    if let Ok((plan, stats)) = qcow2::build_plan(data, &h) {
        assert_eq!(plan.logical_size, h.size);
        assert!(stats.data_bytes + stats.zero_bytes <= h.size);
        check_plan(&plan, data);
    }
}

/// `image_vmdk`: descriptor grammar, header/footer parse and grain directory walk.
pub fn image_vmdk(data: &[u8]) {
    if let Ok(d) = vmdk::descriptor::parse(data) {
        let _ = vmdk::descriptor::check(&d, 0);
    }
    let Ok(h) = vmdk::parse(data, MAX_VIRTUAL) else {
        return;
    };
    assert!(h.virtual_size() <= MAX_VIRTUAL);
    if let Ok((plan, data_bytes)) = vmdk::build_plan(data, &h) {
        assert!(data_bytes <= h.virtual_size());
        check_plan(&plan, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harnesses_survive_simple_inputs() {
        for f in [image_detect, image_qcow2, image_vmdk] {
            f(b"");
            f(b"QFI\xfb\0\0\0\x03");
            f(b"KDMV");
            f(&[0u8; 1000]);
        }
    }
}
