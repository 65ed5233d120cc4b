//! Hostile names against every name checker: whatever is accepted must pass the harness's
//! independent allow-list (`ember_drivers::fuzz_harness::forbidden`), and each forbidden class
//! (shell metacharacters, leading `-`, `/`, `..`, control characters and newlines, over-long,
//! non-ASCII, invalid UTF-8 turned lossy) is refused by every checker.

use ember_drivers::fuzz_harness::{check_names, forbidden, SHELL_META};
use ember_drivers::names;
use proptest::prelude::*;

const U: &str = "0b6c3a2e-2d1f-4b8e-9d6c-3f7a1e2b4c5d";

/// Every checker refuses `s`.
fn all_refuse(s: &str) {
    check_names(s);
    assert!(names::check_volume_name(s).is_err(), "volume {s:?}");
    assert!(names::check_snapshot_name(s).is_err(), "snapshot {s:?}");
    assert!(names::check_display_name(s).is_err(), "display {s:?}");
    assert!(names::check_lvm_name("t", s).is_err(), "lvm {s:?}");
    assert!(names::parse_uuid(s).is_err(), "uuid {s:?}");
}

/// A hostile fragment: one of each forbidden class.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(SHELL_META.to_vec()).prop_map(String::from),
        Just("/".to_string()),
        Just("..".to_string()),
        Just("../".to_string()),
        Just("\n".to_string()),
        Just("\r".to_string()),
        Just("\0".to_string()),
        (0u8..0x20).prop_map(|b| char::from(b).to_string()),
        Just("\u{7f}".to_string()),
        Just("\u{fffd}".to_string()), // what invalid UTF-8 becomes
        Just("é".to_string()),
        Just("\u{202e}".to_string()), // right-to-left override
        Just("$(reboot)".to_string()),
        Just("`id`".to_string()),
    ]
}

/// A plausible base name the hostile fragment is spliced into.
fn base() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(format!("volume-{U}")),
        Just(format!("snapshot-{U}")),
        Just(U.to_string()),
        "[A-Za-z0-9][A-Za-z0-9_.+-]{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// A forbidden fragment anywhere in a name: every checker refuses it (`..` only where it is
    /// the whole name or the checker forbids it; see `dotdot_*`).
    #[test]
    fn spliced_hostile_fragment_is_refused(b in base(), h in hostile(), at in 0usize..64) {
        prop_assume!(h != "..");
        let at = at.min(b.len());
        let s = format!("{}{}{}", &b[..at], h, &b[at..]);
        check_names(&s);
        prop_assert!(forbidden(&s, 1 << 20).is_some());
        all_refuse(&s);
    }

    #[test]
    fn leading_dash_is_refused(b in base()) {
        all_refuse(&format!("-{b}"));
    }

    #[test]
    fn over_long_is_refused(b in "[a-z0-9]{1,8}", n in 128usize..2048) {
        let s = b.repeat(n / b.len() + 1);
        prop_assert!(s.len() > 127);
        all_refuse(&s);
    }

    #[test]
    fn arbitrary_strings_only_pass_the_allow_list(s in any::<String>()) {
        check_names(&s);
    }

    #[test]
    fn arbitrary_bytes_lossy(b in prop::collection::vec(any::<u8>(), 0..200)) {
        ember_drivers::fuzz_harness::names(&b);
    }

    #[test]
    fn allow_listed_alphabet(s in "[A-Za-z0-9_.+-]{0,140}") {
        check_names(&s);
    }
}

#[test]
fn dotdot_is_refused() {
    for s in ["..", ".", "a..b", "../x", "..a"] {
        check_names(s);
        assert!(names::check_display_name(s).is_err(), "{s:?}");
    }
    assert!(names::check_lvm_name("vg", "..").is_err());
    assert!(names::check_lvm_name("vg", ".").is_err());
}

#[test]
fn invalid_utf8_is_refused_after_lossy_decoding() {
    for b in [&b"vol\xffume"[..], b"\xc3\x28", b"volume-\xed\xa0\x80"] {
        let s = String::from_utf8_lossy(b);
        all_refuse(&s);
    }
}

#[test]
fn canonical_names_pass() {
    names::check_volume_name(&format!("volume-{U}")).unwrap();
    names::check_snapshot_name(&format!("snapshot-{U}")).unwrap();
    names::check_display_name("db-01.a_b").unwrap();
    names::check_lvm_name("vg", "cinder-volumes").unwrap();
    check_names(&format!("volume-{U}"));
}
