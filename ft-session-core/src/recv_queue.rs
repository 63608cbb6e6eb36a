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
}
