//! The synchronous fallback backend: each pushed request runs at once with `pread`/`pwrite`.

use super::{kernel_result, BufferPool, Done, IoBackend, IoOp, Req};
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::Duration;

/// Runs requests synchronously with positioned reads and writes.
pub struct SyncBackend {
    files: Vec<File>,
    pool: BufferPool,
    done: VecDeque<Done>,
}

impl SyncBackend {
    /// A backend over `files` using `pool`.
    pub fn new(files: Vec<File>, pool: BufferPool) -> Self {
        SyncBackend {
            files,
            pool,
            done: VecDeque::new(),
        }
    }
}

impl IoBackend for SyncBackend {
    fn pool(&self) -> &BufferPool {
        &self.pool
    }

    fn pool_mut(&mut self) -> &mut BufferPool {
        &mut self.pool
    }

    fn push(&mut self, req: Req) -> io::Result<()> {
        let file = &self.files[req.file];
        let range = req.buf_off..req.buf_off + req.len;
        let res = match req.op {
            IoOp::Read => file.read_at(&mut self.pool.get_mut(req.buf)[range], req.offset),
            IoOp::Write => file.write_at(&self.pool.get(req.buf)[range], req.offset),
        };
        self.done.push_back(Done {
            user_data: req.user_data,
            result: kernel_result(res),
        });
        Ok(())
    }

    fn wait(&mut self, _min: usize, _timeout: Duration, out: &mut Vec<Done>) -> io::Result<()> {
        out.extend(self.done.drain(..));
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }

    fn name(&self) -> &'static str {
        "sync"
    }
}
