//! A minimal binding to libiscsi (the userspace iSCSI initiator; this kernel has no SCSI layer),
//! loaded at run time with `dlopen`, so the test binary builds and skips cleanly where
//! libiscsi is absent. All unsafe code of the tests is in this module.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

type Ctx = *mut c_void;
type Task = *mut c_void;

#[repr(C)]
struct ScsiIovec {
    iov_base: *mut c_void,
    iov_len: usize,
}

/// The first field of libiscsi's `struct scsi_task` (scsi-lowlevel.h): `int status`.
#[repr(C)]
struct TaskHead {
    status: c_int,
}

const ISCSI_SESSION_NORMAL: c_int = 2;
const SCSI_STATUS_GOOD: c_int = 0;

type CreateContextFn = unsafe extern "C" fn(*const c_char) -> Ctx;
type DestroyContextFn = unsafe extern "C" fn(Ctx) -> c_int;
type SetTargetnameFn = unsafe extern "C" fn(Ctx, *const c_char) -> c_int;
type SetSessionTypeFn = unsafe extern "C" fn(Ctx, c_int) -> c_int;
type SetInitiatorUsernamePwdFn = unsafe extern "C" fn(Ctx, *const c_char, *const c_char) -> c_int;
type FullConnectSyncFn = unsafe extern "C" fn(Ctx, *const c_char, c_int) -> c_int;
type SetTimeoutFn = unsafe extern "C" fn(Ctx, c_int) -> c_int;
type SetReconnectMaxRetriesFn = unsafe extern "C" fn(Ctx, c_int);
type Write16SyncFn = unsafe extern "C" fn(
    Ctx,
    c_int,
    u64,
    *mut u8,
    u32,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
) -> Task;
type Read16IovSyncFn = unsafe extern "C" fn(
    Ctx,
    c_int,
    u64,
    u32,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    *mut ScsiIovec,
    c_int,
) -> Task;
type FreeTaskFn = unsafe extern "C" fn(Task);
type GetErrorFn = unsafe extern "C" fn(Ctx) -> *const c_char;
type LogoutSyncFn = unsafe extern "C" fn(Ctx) -> c_int;

struct Lib {
    create_context: CreateContextFn,
    destroy_context: DestroyContextFn,
    set_targetname: SetTargetnameFn,
    set_session_type: SetSessionTypeFn,
    set_initiator_username_pwd: SetInitiatorUsernamePwdFn,
    full_connect_sync: FullConnectSyncFn,
    set_timeout: SetTimeoutFn,
    set_reconnect_max_retries: SetReconnectMaxRetriesFn,
    write16_sync: Write16SyncFn,
    read16_iov_sync: Read16IovSyncFn,
    free_task: FreeTaskFn,
    get_error: GetErrorFn,
    logout_sync: LogoutSyncFn,
}

// SAFETY: Lib holds only function pointers into a library that is never unloaded.
unsafe impl Send for Lib {}
// SAFETY: as above; the pointers are immutable after loading.
unsafe impl Sync for Lib {}

fn load() -> Option<Lib> {
    // SAFETY: dlopen with a constant NUL-terminated name; the handle is kept forever (never
    // dlclose'd), so every symbol below stays valid for the life of the process.
    let handle = unsafe {
        let h = libc::dlopen(c"libiscsi.so.7".as_ptr(), libc::RTLD_NOW);
        if h.is_null() {
            libc::dlopen(c"libiscsi.so".as_ptr(), libc::RTLD_NOW)
        } else {
            h
        }
    };
    if handle.is_null() {
        return None;
    }
    macro_rules! sym {
        ($name:literal, $ty:ty) => {{
            // SAFETY: `handle` is a live dlopen handle and the name is NUL-terminated.
            let p = unsafe { libc::dlsym(handle, concat!($name, "\0").as_ptr().cast()) };
            if p.is_null() {
                return None;
            }
            // SAFETY: the symbol is the libiscsi function of that name, whose C prototype
            // (iscsi.h of libiscsi 1.19) matches the field type it is assigned to.
            unsafe { std::mem::transmute::<*mut c_void, $ty>(p) }
        }};
    }
    Some(Lib {
        create_context: sym!("iscsi_create_context", CreateContextFn),
        destroy_context: sym!("iscsi_destroy_context", DestroyContextFn),
        set_targetname: sym!("iscsi_set_targetname", SetTargetnameFn),
        set_session_type: sym!("iscsi_set_session_type", SetSessionTypeFn),
        set_initiator_username_pwd: sym!(
            "iscsi_set_initiator_username_pwd",
            SetInitiatorUsernamePwdFn
        ),
        full_connect_sync: sym!("iscsi_full_connect_sync", FullConnectSyncFn),
        get_error: sym!("iscsi_get_error", GetErrorFn),
        logout_sync: sym!("iscsi_logout_sync", LogoutSyncFn),
        set_timeout: sym!("iscsi_set_timeout", SetTimeoutFn),
        set_reconnect_max_retries: sym!(
            "iscsi_set_reconnect_max_retries",
            SetReconnectMaxRetriesFn
        ),
        write16_sync: sym!("iscsi_write16_sync", Write16SyncFn),
        read16_iov_sync: sym!("iscsi_read16_iov_sync", Read16IovSyncFn),
        free_task: sym!("scsi_free_scsi_task", FreeTaskFn),
    })
}

fn lib() -> Option<&'static Lib> {
    static LIB: OnceLock<Option<Lib>> = OnceLock::new();
    LIB.get_or_init(load).as_ref()
}

/// True when libiscsi can be loaded.
pub fn available() -> bool {
    lib().is_some()
}

/// One logged-in iSCSI session to a LUN. Not `Send`: libiscsi contexts are single-threaded.
pub struct Session {
    lib: &'static Lib,
    ctx: Ctx,
    lun: c_int,
}

impl Session {
    /// Logs in to `iqn` LUN `lun` at `portal` as `initiator`, with CHAP when given.
    pub fn connect(
        initiator: &str,
        portal: &str,
        iqn: &str,
        lun: u32,
        chap: Option<(&str, &str)>,
    ) -> Result<Session, String> {
        let lib = lib().ok_or("libiscsi is not available")?;
        let c = |s: &str| CString::new(s).map_err(|_| format!("NUL in {s:?}"));
        let (initiator, portal, iqn) = (c(initiator)?, c(portal)?, c(iqn)?);
        // SAFETY: the argument is a valid C string; a NULL result is checked.
        let ctx = unsafe { (lib.create_context)(initiator.as_ptr()) };
        if ctx.is_null() {
            return Err("iscsi_create_context failed".into());
        }
        let s = Session {
            lib,
            ctx,
            lun: lun as c_int,
        };
        // SAFETY: ctx is a live context owned by `s`; the strings outlive the calls (libiscsi
        // copies them).
        let rc = unsafe {
            (lib.set_targetname)(ctx, iqn.as_ptr());
            (lib.set_session_type)(ctx, ISCSI_SESSION_NORMAL);
            (lib.set_timeout)(ctx, 10);
            (lib.set_reconnect_max_retries)(ctx, 3);
            if let Some((u, p)) = chap {
                let (u, p) = (c(u)?, c(p)?);
                (lib.set_initiator_username_pwd)(ctx, u.as_ptr(), p.as_ptr());
            }
            (lib.full_connect_sync)(ctx, portal.as_ptr(), s.lun)
        };
        if rc != 0 {
            return Err(s.error());
        }
        Ok(s)
    }

    fn error(&self) -> String {
        // SAFETY: ctx is live; libiscsi returns a NUL-terminated string it owns (or NULL).
        unsafe {
            let p = (self.lib.get_error)(self.ctx);
            if p.is_null() {
                "unknown libiscsi error".into()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }

    /// Finishes a sync task: `Ok` when it completed with GOOD status; frees it.
    fn finish(&self, task: Task, what: &str) -> Result<(), String> {
        if task.is_null() {
            return Err(format!("{what}: {}", self.error()));
        }
        // SAFETY: a non-NULL task returned by a libiscsi sync call is a valid `struct scsi_task`
        // whose first member is `int status`; it is freed exactly once right after.
        let status = unsafe {
            let status = (*task.cast::<TaskHead>()).status;
            (self.lib.free_task)(task);
            status
        };
        if status == SCSI_STATUS_GOOD {
            Ok(())
        } else {
            Err(format!("{what}: SCSI status {status:#x}: {}", self.error()))
        }
    }

    /// WRITE(16) of `data` (a multiple of 512 bytes) at `lba`.
    pub fn write(&self, lba: u64, data: &[u8]) -> Result<(), String> {
        assert_eq!(data.len() % 512, 0);
        let mut buf = data.to_vec();
        // SAFETY: ctx is live; `buf` is valid for `buf.len()` bytes during the synchronous call
        // and libiscsi only reads from it.
        let task = unsafe {
            (self.lib.write16_sync)(
                self.ctx,
                self.lun,
                lba,
                buf.as_mut_ptr(),
                buf.len() as u32,
                512,
                0,
                0,
                0,
                0,
                0,
            )
        };
        self.finish(task, "WRITE16")
    }

    /// READ(16) of `len` bytes (a multiple of 512) at `lba`.
    pub fn read(&self, lba: u64, len: usize) -> Result<Vec<u8>, String> {
        assert_eq!(len % 512, 0);
        let mut buf = vec![0u8; len];
        let mut iov = ScsiIovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        // SAFETY: ctx is live; `iov` describes `buf`, which stays alive and unaliased for the
        // synchronous call, so libiscsi writes at most `len` bytes into it.
        let task = unsafe {
            (self.lib.read16_iov_sync)(
                self.ctx, self.lun, lba, len as u32, 512, 0, 0, 0, 0, 0, &mut iov, 1,
            )
        };
        self.finish(task, "READ16").map(|()| buf)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: ctx was created by iscsi_create_context and is destroyed exactly once; a
        // logout on a dead connection just fails.
        unsafe {
            (self.lib.logout_sync)(self.ctx);
            (self.lib.destroy_context)(self.ctx);
        }
    }
}
