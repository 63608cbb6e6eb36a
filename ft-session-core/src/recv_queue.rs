//! Received bytes waiting for the application: owned `Bytes` slices kept by
//! reference (no copy), then bytes copied from borrowed input, in order.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

/// An ordered queue of received bytes.
#[derive(Debug, Default)]
pub(crate) struct RecvQueue {
    chunks: VecDeque<Bytes>,
    /// Logically after every chunk; borrowed input is coalesced here.
    tail: BytesMut,
    len: usize,
}

impl RecvQueue {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a copy of borrowed bytes.
    pub(crate) fn push_slice(&mut self, data: &[u8]) {
        self.tail.extend_from_slice(data);
        self.len += data.len();
    }

    /// Appends owned bytes without copying.
    pub(crate) fn push_bytes(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if !self.tail.is_empty() {
            // Keep order: what was copied in so far comes first.
            let t = self.tail.split().freeze();
            self.chunks.push_back(t);
        }
        self.len += data.len();
        self.chunks.push_back(data);
    }

    /// Copies up to `buf.len()` bytes out.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            let src: &mut dyn Buf = match self.chunks.front_mut() {
                Some(c) => c,
                None if !self.tail.is_empty() => &mut self.tail,
                None => break,
            };
            let k = (buf.len() - n).min(src.remaining());
            src.copy_to_slice(&mut buf[n..n + k]);
            n += k;
            if self.chunks.front().is_some_and(|c| c.is_empty()) {
                self.chunks.pop_front();
            }
        }
        self.len -= n;
        n
    }

    /// Drops the last `n` bytes (the newest received; at most `len`).
    pub(crate) fn truncate_back(&mut self, n: usize) {
        let mut left = n.min(self.len);
        self.len -= left;
        let t = left.min(self.tail.len());
        self.tail.truncate(self.tail.len() - t);
        left -= t;
        while left > 0 {
            let Some(back) = self.chunks.back_mut() else {
                break;
            };
            if back.len() <= left {
                left -= back.len();
                self.chunks.pop_back();
            } else {
                back.truncate(back.len() - left);
                left = 0;
            }
        }
    }

    /// Takes the next contiguous piece without copying.
    pub(crate) fn read_chunk(&mut self) -> Bytes {
        let b = match self.chunks.pop_front() {
            Some(c) => c,
            None => self.tail.split().freeze(),
        };
        self.len -= b.len();
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_kept_across_owned_and_borrowed_input() {
        let mut q = RecvQueue::default();
        q.push_slice(b"ab");
        q.push_bytes(Bytes::from_static(b"cd"));
        q.push_slice(b"ef");
        q.push_bytes(Bytes::new());
        assert_eq!(q.len(), 6);
        let mut buf = [0u8; 3];
        assert_eq!(q.read(&mut buf), 3);
        assert_eq!(&buf, b"abc");
        assert_eq!(&q.read_chunk()[..], b"d");
        assert_eq!(&q.read_chunk()[..], b"ef");
        assert!(q.is_empty());
        assert_eq!(q.read(&mut buf), 0);
    }

    #[test]
    fn truncate_back_drops_the_newest_bytes_across_chunks() {
        let mut q = RecvQueue::default();
        q.push_slice(b"ab");
        q.push_bytes(Bytes::from_static(b"cdef"));
        q.push_slice(b"gh");
        q.truncate_back(3);
        assert_eq!(q.len(), 5);
        let mut buf = [0u8; 8];
        assert_eq!(q.read(&mut buf), 5);
        assert_eq!(&buf[..5], b"abcde");
        q.push_slice(b"xy");
        q.truncate_back(10);
        assert!(q.is_empty());
        assert_eq!(q.read(&mut buf), 0);
    }
}
