//! An aligned buffer pool: one anonymous mapping (page-aligned, so O_DIRECT-safe) cut into equal
//! buffers. The pool tracks which buffers the kernel currently owns; handing out a slice of a
//! buffer that is in flight is a bug and panics instead of racing the kernel.
//!
//! A pool may end with a **zero buffer**: written from, never written into. Its pages are never
//! touched for writing, so they stay the kernel's shared zero page and cost no memory; it is
//! left out of io_uring buffer registration, which would pin (and so allocate) them; a write
//! from it reads the shared zero page. With 4 MiB buffers this keeps 4 MiB out of every run's
//! resident set.

use memmap2::MmapMut;
use std::io;

/// Page-aligned, equal-sized buffers in one mapping.
pub struct BufferPool {
    map: MmapMut,
    buf_size: usize,
    count: usize,
    /// The last buffer is the zero buffer.
    zero_buffer: bool,
    in_flight: Vec<u32>,
}

impl BufferPool {
    /// Maps `count` buffers of `buf_size` bytes (a multiple of the page size).
    pub fn new(count: usize, buf_size: usize) -> io::Result<Self> {
        let total = count
            .checked_mul(buf_size)
            .filter(|t| *t > 0)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let map = MmapMut::map_anon(total)?;
        Ok(BufferPool {
            map,
            buf_size,
            count,
            zero_buffer: false,
            in_flight: vec![0; count],
        })
    }

    /// Maps `count` buffers of `buf_size` bytes to read into and write from, and after them a
    /// zero buffer of the same size ([`BufferPool::zero_buffer`]).
    pub fn with_zero_buffer(count: usize, buf_size: usize) -> io::Result<Self> {
        let mut pool = Self::new(count + 1, buf_size)?;
        pool.zero_buffer = true;
        Ok(pool)
    }

    /// The zero buffer's index, if the pool has one: all zeros for the pool's whole life.
    pub fn zero_buffer(&self) -> Option<usize> {
        self.zero_buffer.then(|| self.count - 1)
    }

    /// Size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Number of buffers.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The buffer `idx`; panics if the kernel may be writing into it.
    pub fn get(&self, idx: usize) -> &[u8] {
        self.check_idle(idx);
        &self.map[idx * self.buf_size..(idx + 1) * self.buf_size]
    }

    /// The buffer `idx`, mutably; panics if the kernel may be using it or if it is the zero
    /// buffer.
    pub fn get_mut(&mut self, idx: usize) -> &mut [u8] {
        self.check_idle(idx);
        self.check_writable(idx);
        &mut self.map[idx * self.buf_size..(idx + 1) * self.buf_size]
    }

    /// Buffer `a` to read from and buffer `b` to write into, at once (`a != b`); panics if
    /// either is in flight.
    pub fn pair(&mut self, a: usize, b: usize) -> (&[u8], &mut [u8]) {
        assert_ne!(a, b, "pair needs two different buffers");
        self.check_idle(a);
        self.check_idle(b);
        self.check_writable(b);
        let bs = self.buf_size;
        let (lo, hi) = self.map.split_at_mut(a.max(b) * bs);
        let (first, second) = (&mut lo[a.min(b) * bs..][..bs], &mut hi[..bs]);
        if a < b {
            (first, second)
        } else {
            (second, first)
        }
    }

    fn check_writable(&self, idx: usize) {
        assert_ne!(
            self.zero_buffer(),
            Some(idx),
            "the zero buffer is never written into"
        );
    }

    fn check_idle(&self, idx: usize) {
        assert_eq!(
            self.in_flight[idx], 0,
            "buffer {idx} accessed while an I/O on it is in flight"
        );
    }

    /// Raw address of byte `off` of buffer `idx`, for building an SQE.
    pub(crate) fn addr(&mut self, idx: usize, off: usize) -> *mut u8 {
        assert!(off <= self.buf_size);
        self.map[idx * self.buf_size + off..].as_mut_ptr()
    }

    /// Buffers `0..registrable()` are the ones to register with io_uring: all but the zero
    /// buffer.
    pub(crate) fn registrable(&self) -> usize {
        self.count - usize::from(self.zero_buffer)
    }

    /// iovecs describing the [`BufferPool::registrable`] buffers, for io_uring buffer
    /// registration.
    pub(crate) fn iovecs(&mut self) -> Vec<libc::iovec> {
        (0..self.registrable())
            .map(|i| libc::iovec {
                iov_base: self.addr(i, 0).cast(),
                iov_len: self.buf_size,
            })
            .collect()
    }

    pub(crate) fn mark_busy(&mut self, idx: usize) {
        self.in_flight[idx] += 1;
    }

    pub(crate) fn mark_idle(&mut self, idx: usize) {
        self.in_flight[idx] -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zero_buffer_comes_last_is_left_out_of_registration_and_is_never_written() {
        let mut pool = BufferPool::with_zero_buffer(3, 8192).unwrap();
        assert_eq!((pool.count(), pool.zero_buffer()), (4, Some(3)));
        assert_eq!(pool.registrable(), 3);
        let iov = pool.iovecs();
        assert_eq!(iov.len(), 3);
        assert!(iov.iter().all(|v| v.iov_len == 8192));
        assert!(pool.get(3).iter().all(|b| *b == 0));
        pool.get_mut(2).fill(7);
        let (from, into) = pool.pair(3, 1);
        into.copy_from_slice(from);
        let write = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.get_mut(3)[0] = 1;
        }));
        assert!(write.is_err(), "the zero buffer was handed out for writing");
        let plain = BufferPool::new(3, 8192).unwrap();
        assert_eq!((plain.zero_buffer(), plain.registrable()), (None, 3));
    }
}
