//! CHAP credentials: generation from the OS random source, a [`Secret`] type that never prints,
//! and 0600 storage of files holding secrets.
//!
//! Generated user names are 20 characters and secrets 16 characters from Cinder's alphabet
//! (no look-alike characters `0 O 1 l I`), drawn with `rand::rngs::OsRng`. 16 is the lower bound
//! Ember requires and also the longest secret some initiators (Microsoft's) accept.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::rngs::OsRng;
use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{io_err, Result, TargetError};

/// Cinder's password alphabet (`volume_utils.generate_password`): no 0/O/1/l/I.
const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
/// Length of generated user names (Cinder: 20).
pub const USERNAME_LEN: usize = 20;
/// Length of generated secrets (≥ 16 as required; Cinder: 16).
pub const SECRET_LEN: usize = 16;

/// A secret string. `Debug` and `Display` print `***`; the value is reachable only through
/// [`Secret::expose`]. Serialisation writes the real value (it is needed in `provider_auth` and
/// connection_info), so only serialise into places that are themselves protected.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret value. Never log or format it into an error.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Generates a random secret of [`SECRET_LEN`] characters.
    pub fn generate() -> Self {
        Self(random_string(SECRET_LEN))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

fn random_string(len: usize) -> String {
    let mut rng = OsRng;
    (0..len)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// A CHAP user name and secret (tgt `incominguser`).
#[derive(Clone, PartialEq, Eq)]
pub struct Chap {
    pub username: String,
    pub secret: Secret,
}

impl fmt::Debug for Chap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chap")
            .field("username", &self.username)
            .field("secret", &self.secret)
            .finish()
    }
}

impl Chap {
    /// Validated credentials: both parts 1..=255 printable ASCII bytes without whitespace (they are
    /// written as one line into tgt config files); the secret at least 12 bytes (RFC 3720's
    /// recommendation, tgt's and libiscsi's expectation).
    pub fn new(username: &str, secret: Secret) -> Result<Self> {
        let token_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 255
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'#' && b != b'<' && b != b'>')
        };
        if !token_ok(username) {
            return Err(TargetError::InvalidChap {
                reason: "user name must be 1..=255 printable ASCII bytes without whitespace, `#`, `<`, `>`",
            });
        }
        if !token_ok(secret.expose()) {
            return Err(TargetError::InvalidChap {
                reason:
                    "secret must be 1..=255 printable ASCII bytes without whitespace, `#`, `<`, `>`",
            });
        }
        if secret.expose().len() < 12 {
            return Err(TargetError::InvalidChap {
                reason: "secret is shorter than 12 bytes",
            });
        }
        Ok(Self {
            username: username.to_owned(),
            secret,
        })
    }

    /// Fresh random credentials (20-character user, 16-character secret).
    pub fn generate() -> Self {
        Self {
            username: random_string(USERNAME_LEN),
            secret: Secret::generate(),
        }
    }

    /// Cinder's `provider_auth` string: `CHAP <user> <secret>`.
    pub fn to_provider_auth(&self) -> String {
        format!("CHAP {} {}", self.username, self.secret.expose())
    }
}

/// Writes `contents` to `path` atomically (temp file in the same directory, fsync, rename,
/// fsync of the directory) with file mode `mode` from creation on (so a secret is never readable
/// by others, not even briefly).
pub fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err("cannot create", &tmp))?;
        // The umask may have removed bits; set exactly `mode`.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("cannot chmod", &tmp))?;
        f.write_all(contents)
            .map_err(io_err("cannot write", &tmp))?;
        f.sync_all().map_err(io_err("cannot fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("cannot rename into place", path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("cannot fsync directory", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_are_random_and_valid() {
        let a = Chap::generate();
        let b = Chap::generate();
        assert_ne!(a.username, b.username);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.username.len(), USERNAME_LEN);
        assert!(a.secret.expose().len() >= 16);
        assert!(a.secret.expose().bytes().all(|c| ALPHABET.contains(&c)));
        Chap::new(&a.username, a.secret.clone()).unwrap();
    }

    #[test]
    fn secret_never_prints() {
        let c = Chap::new("user", Secret::new("S3cretCHAPpw12")).unwrap();
        let dbg = format!("{c:?} {} {:?}", c.secret, c.secret);
        assert!(!dbg.contains("S3cret"), "{dbg}");
        assert_eq!(c.to_provider_auth(), "CHAP user S3cretCHAPpw12");
    }

    #[test]
    fn rejects_injection_in_credentials() {
        assert!(Chap::new(
            "user\nbacking-store /dev/vda",
            Secret::new("S3cretCHAPpw12")
        )
        .is_err());
        assert!(Chap::new("user", Secret::new("S3cret CHAPpw12")).is_err());
        assert!(Chap::new("user", Secret::new("short")).is_err());
        assert!(Chap::new("", Secret::new("S3cretCHAPpw12")).is_err());
        let e = Chap::new("user", Secret::new("S3cret\nCHAPpw12")).unwrap_err();
        assert!(!e.to_string().contains("S3cret"));
    }

    #[test]
    fn atomic_write_is_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_file_atomic(&p, b"one", 0o600).unwrap();
        write_file_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left"
        );
    }
}
