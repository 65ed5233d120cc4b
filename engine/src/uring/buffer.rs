//! An aligned buffer pool: one anonymous mapping (page-aligned, so O_DIRECT-safe) cut into equal
//! buffers. The pool tracks which buffers the kernel currently owns; handing out a slice of a
//! buffer that is in flight is a bug and panics instead of racing the kernel.

use memmap2::MmapMut;
use std::io;

/// Page-aligned, equal-sized buffers in one mapping.
pub struct BufferPool {
    map: MmapMut,
    buf_size: usize,
    count: usize,
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
            in_flight: vec![0; count],
        })
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

    /// The buffer `idx`, mutably; panics if the kernel may be using it.
    pub fn get_mut(&mut self, idx: usize) -> &mut [u8] {
        self.check_idle(idx);
        &mut self.map[idx * self.buf_size..(idx + 1) * self.buf_size]
    }

    /// Buffer `a` to read from and buffer `b` to write into, at once (`a != b`); panics if
    /// either is in flight.
    pub fn pair(&mut self, a: usize, b: usize) -> (&[u8], &mut [u8]) {
        assert_ne!(a, b, "pair needs two different buffers");
        self.check_idle(a);
        self.check_idle(b);
        let bs = self.buf_size;
        let (lo, hi) = self.map.split_at_mut(a.max(b) * bs);
        let (first, second) = (&mut lo[a.min(b) * bs..][..bs], &mut hi[..bs]);
        if a < b {
            (first, second)
        } else {
            (second, first)
        }
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

    /// iovecs describing every buffer, for io_uring buffer registration.
    pub(crate) fn iovecs(&mut self) -> Vec<libc::iovec> {
        (0..self.count)
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
