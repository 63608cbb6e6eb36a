//! The stream buffer: bytes written but not known to be received, as
//! zero-copy `Bytes` chunks addressed by u64 stream offsets.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

/// Allocations of released chunks kept for the copying write path to
/// reuse: freeing each and allocating anew makes the allocator hand memory
/// back to the kernel and fault it in again, page by page.
const SPARES: usize = 16;
/// Smaller allocations are not worth keeping, larger ones (a big
/// zero-copy send) not worth holding on to: spares stay within
/// `SPARES * SPARE_MAX` (2 MiB) per session, above its retained bytes.
const SPARE_MIN: usize = 16 * 1024;
const SPARE_MAX: usize = 128 * 1024;

/// Retained outgoing bytes `[start, end)`.
#[derive(Debug, Default)]
pub struct StreamBuffer {
    chunks: VecDeque<Bytes>,
    start: u64,
    end: u64,
    /// Released allocations no one else holds, empty (see [`SPARES`]).
    spares: Vec<BytesMut>,
}

impl StreamBuffer {
    /// An empty buffer at offset 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offset of the oldest retained byte (everything before was released).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Offset one past the newest byte written.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes retained.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True if nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Appends a chunk without copying.
    pub fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.end += chunk.len() as u64;
        self.chunks.push_back(chunk);
    }

    /// Releases every byte before `offset` (clamped to the retained range);
    /// returns how many bytes were released.
    pub fn release_to(&mut self, offset: u64) -> u64 {
        let target = offset.min(self.end);
        if target <= self.start {
            return 0;
        }
        let released = target - self.start;
        let mut left = released;
        while left > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let n = front.len() as u64;
            if n <= left {
                left -= n;
                if let Some(chunk) = self.chunks.pop_front() {
                    self.recycle(chunk);
                }
            } else {
                front.advance(left as usize);
                left = 0;
            }
        }
        self.start = target;
        if self.chunks.is_empty() {
            // An idle session keeps no spare allocation (the list itself
            // stays: the steady state allocates nothing).
            self.spares.clear();
        }
        released
    }

    /// Keeps a released chunk's allocation if nothing else holds it.
    fn recycle(&mut self, chunk: Bytes) {
        if self.spares.len() < SPARES {
            if let Ok(mut m) = chunk.try_into_mut() {
                m.clear();
                if (SPARE_MIN..=SPARE_MAX).contains(&m.capacity()) {
                    self.spares.push(m);
                }
            }
        }
    }

    /// An empty allocation of a released chunk, to copy new bytes into.
    pub fn take_spare(&mut self) -> Option<BytesMut> {
        self.spares.pop()
    }

    /// Up to `max` bytes starting at `offset`, from a single chunk (no copy).
    /// `None` if `offset` is not retained or nothing is there.
    pub fn slice(&self, offset: u64, max: usize) -> Option<Bytes> {
        if offset < self.start || offset >= self.end || max == 0 {
            return None;
        }
        let mut skip = offset - self.start;
        for c in &self.chunks {
            let n = c.len() as u64;
            if skip < n {
                let from = skip as usize;
                let to = (from + max).min(c.len());
                return Some(c.slice(from..to));
            }
            skip -= n;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn slices_release_and_offsets() {
        let mut b = StreamBuffer::new();
        b.push(Bytes::from_static(b"hello"));
        b.push(Bytes::new());
        b.push(Bytes::from_static(b"world"));
        assert_eq!((b.start(), b.end(), b.len()), (0, 10, 10));
        assert_eq!(&b.slice(3, 100).unwrap()[..], b"lo");
        assert_eq!(&b.slice(5, 2).unwrap()[..], b"wo");
        assert!(b.slice(10, 1).is_none());
        assert_eq!(b.release_to(7), 7);
        assert_eq!((b.start(), b.end(), b.len()), (7, 10, 3));
        assert_eq!(&b.slice(7, 10).unwrap()[..], b"rld");
        assert!(b.slice(6, 1).is_none(), "released bytes are gone");
        assert_eq!(b.release_to(3), 0, "release never goes back");
        assert_eq!(b.release_to(100), 3, "clamped to what exists");
        assert!(b.is_empty());
    }

    #[test]
    fn empty_and_zero_length_slices() {
        let mut b = StreamBuffer::new();
        assert!(b.is_empty());
        b.push(Bytes::from_static(b"abc"));
        assert!(!b.is_empty(), "three bytes retained");
        assert!(b.slice(0, 0).is_none(), "a zero-length slice is nothing");
        assert_eq!(b.release_to(2), 2);
        assert!(!b.is_empty(), "one byte still retained");
        assert_eq!(&b.slice(2, 1).unwrap()[..], b"c");
        assert_eq!(b.release_to(3), 1);
        assert!(b.is_empty());
        assert!(b.slice(3, 1).is_none());
    }

    #[test]
    fn slice_shares_memory() {
        let mut b = StreamBuffer::new();
        let chunk = Bytes::from(vec![1u8; 1000]);
        let ptr = chunk.as_ptr();
        b.push(chunk);
        assert_eq!(b.slice(10, 5).unwrap().as_ptr(), ptr.wrapping_add(10));
    }
}
