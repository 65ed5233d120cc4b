//! tgtd's management protocol, spoken directly over its unix socket, used for the one request
//! that carries a secret: creating a CHAP account. `tgtadm --op new --mode account --password S`
//! (and tgt-admin, which runs exactly that) puts the secret on a command line, visible in
//! `/proc/<pid>/cmdline` to every local user while tgtadm runs. Here it only crosses a root-only
//! socket.
//!
//! Protocol (tgt 1.0.85 `usr/tgtadm.h`, `usr/tgtadm.c`): connect to
//! `/var/run/tgtd/socket.<control port>` (`$TGT_IPC_SOCKET.<port>` when set), send a
//! `struct tgtadm_req` header (120 bytes, native endian) followed by the NUL-terminated parameter
//! string (`user=U,password=P`), read `struct tgtadm_rsp { u32 err; u32 len; }` and `len - 8`
//! bytes of text. tgtd accepts only peers with its own uid/gid (SO_PEERCRED). Note: tgtd started
//! with debug logging (`-d 1`) logs every request buffer, secrets included; don't.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::chap::Secret;
use crate::error::{Result, TargetError};

const MODE_ACCOUNT: u32 = 7;
const OP_NEW: u32 = 0;
const LLD_LEN: usize = 64;
/// `sizeof(struct tgtadm_req)` on Linux (all ABIs tgt supports: u32/u64 fields, 8-aligned).
pub const REQ_LEN: usize = 120;

/// tgtadm's error names (`usr/tgtadm_error.h`, in order) and tgtadm's messages for them.
const ERRORS: &[&str] = &[
    "success",
    "unknown error",
    "out of memory",
    "can't find the driver",
    "can't find the target",
    "can't find the logical unit",
    "can't find the session",
    "can't find the connection",
    "can't find the binding",
    "this target already exists",
    "this logical unit number already exists",
    "this access control rule already exists",
    "this access control rule already exists",
    "this access control rule does not exist",
    "this account already exists",
    "can't find the account",
    "too many accounts",
    "invalid request",
    "this target already has an outgoing account",
    "this target is still active",
    "this logical unit is still active",
    "this driver is busy",
    "this operation isn't supported",
    "unknown parameter",
    "this device has prevent removal set",
];

/// The management socket of the tgtd with `control_port`.
pub fn socket_path(control_port: Option<u32>) -> PathBuf {
    let base = std::env::var("TGT_IPC_SOCKET").unwrap_or_else(|_| "/var/run/tgtd/socket".into());
    PathBuf::from(format!("{base}.{}", control_port.unwrap_or(0)))
}

/// Encodes a request header for `mode`/`op` on driver `lld` (`iscsi`, `iser`) with `body_len`
/// parameter bytes.
pub fn encode_header(lld: &str, mode: u32, op: u32, tid: i32, body_len: usize) -> [u8; REQ_LEN] {
    let mut h = [0u8; REQ_LEN];
    h[0..4].copy_from_slice(&mode.to_ne_bytes());
    h[4..8].copy_from_slice(&op.to_ne_bytes());
    let name = &lld.as_bytes()[..lld.len().min(LLD_LEN - 1)];
    h[8..8 + name.len()].copy_from_slice(name);
    let len = (REQ_LEN + body_len) as u32;
    h[8 + LLD_LEN..12 + LLD_LEN].copy_from_slice(&len.to_ne_bytes());
    h[12 + LLD_LEN..16 + LLD_LEN].copy_from_slice(&tid.to_ne_bytes());
    // sid, lun, cid, host_no, device_type, ac_dir, pack, force: 0.
    h
}

/// Creates the CHAP account `user` with `secret` in the tgtd at `control_port`.
pub fn new_account(
    control_port: Option<u32>,
    lld: &str,
    user: &str,
    secret: &Secret,
    timeout: Duration,
) -> Result<()> {
    // tgtd splits the buffer at the first `,` after `user=`.
    if user.contains(',') || user.is_empty() {
        return Err(TargetError::InvalidChap {
            reason: "tgt user names cannot contain `,`",
        });
    }
    let path = socket_path(control_port);
    let io = |op: &'static str| {
        let path = path.clone();
        move |source| TargetError::Io { op, path, source }
    };
    let mut body = Vec::with_capacity(user.len() + secret.expose().len() + 16);
    body.extend_from_slice(b"user=");
    body.extend_from_slice(user.as_bytes());
    body.extend_from_slice(b",password=");
    body.extend_from_slice(secret.expose().as_bytes());
    body.push(0);
    let mut s = UnixStream::connect(&path).map_err(io("cannot connect to tgtd at"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(io("cannot set timeouts on"))?;
    let mut msg = encode_header(lld, MODE_ACCOUNT, OP_NEW, -1, body.len()).to_vec();
    msg.extend_from_slice(&body);
    s.write_all(&msg)
        .map_err(io("cannot send request to tgtd at"))?;
    msg.fill(0);
    body.fill(0);
    let mut rsp = [0u8; 8];
    s.read_exact(&mut rsp)
        .map_err(io("no response from tgtd at"))?;
    let err = u32::from_ne_bytes([rsp[0], rsp[1], rsp[2], rsp[3]]);
    let len = u32::from_ne_bytes([rsp[4], rsp[5], rsp[6], rsp[7]]) as usize;
    if len > 8 {
        let mut rest = vec![0u8; (len - 8).min(1 << 20)];
        let _ = s.read_exact(&mut rest);
    }
    if err == 0 {
        return Ok(());
    }
    Err(TargetError::Command {
        command: format!("tgtd management request (new account {user})"),
        status: format!("tgtadm error {err}"),
        stdout: String::new(),
        stderr: format!(
            "tgtadm: {}",
            ERRORS.get(err as usize).copied().unwrap_or("unknown error")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_tgtadm_req() {
        let h = encode_header("iscsi", MODE_ACCOUNT, OP_NEW, -1, 30);
        assert_eq!(u32::from_ne_bytes(h[0..4].try_into().unwrap()), 7);
        assert_eq!(u32::from_ne_bytes(h[4..8].try_into().unwrap()), 0);
        assert_eq!(&h[8..14], b"iscsi\0");
        assert_eq!(u32::from_ne_bytes(h[72..76].try_into().unwrap()), 150);
        assert_eq!(i32::from_ne_bytes(h[76..80].try_into().unwrap()), -1);
        assert!(h[80..].iter().all(|&b| b == 0));
    }

    #[test]
    fn error_names_line_up() {
        assert_eq!(ERRORS[9], "this target already exists");
        assert_eq!(ERRORS[14], "this account already exists");
        assert_eq!(ERRORS[19], "this target is still active");
        assert_eq!(ERRORS.len(), 25);
    }

    #[test]
    fn refuses_comma_in_user() {
        let e = new_account(
            Some(1),
            "iscsi",
            "a,password=x",
            &Secret::new("S3cretCHAPpw1234"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(e, TargetError::InvalidChap { .. }));
    }
}
