//! An adapter's queue of polled Transmits, written in batches.

use std::collections::VecDeque;
use std::io::IoSlice;

use crate::session::{Transmit, TransportId};

/// Transmits polled ahead for writing in batches (vectored, partial writes
/// allowed), for adapters that use [`crate::Session::set_reports_written`].
///
/// Nothing is copied: payloads stay shared with the stream buffer. The
/// adapter pushes every polled Transmit, writes [`TransmitQueue::io_slices`]
/// with one vectored write (outside any lock it shares with the session),
/// then calls [`TransmitQueue::advance`] with what the write returned and
/// reports the same count to the session with
/// [`crate::Input::Written`]. One write covers only Transmits of one
/// transport: a queue may hold the last frames for a transport the session
/// gave up before those of its next one.
///
/// ```
/// use std::io::{IoSlice, Write};
/// use ft_session_core::TransmitQueue;
/// # use ft_session_core::{Config, Output, Session, Input, TransportInfo};
/// # use std::time::Instant;
/// # let now = Instant::now();
/// # let mut session = Session::client(Config::default(), now, 1);
/// # session.set_reports_written(true);
/// # let Some(Output::Connect { transport }) = session.poll_output() else { unreachable!() };
/// # session.handle_input(now, Input::TransportUp { transport, info: TransportInfo::default() });
/// let mut queue = TransmitQueue::new();
/// while let Some(out) = session.poll_output() {
///     if let Output::Transmit(t) = out {
///         queue.push(t);
///     }
/// }
/// let mut wire: Vec<u8> = Vec::new(); // a socket, in an adapter
/// while let Some(transport) = queue.transport() {
///     let mut bufs = [IoSlice::new(&[]); 64];
///     let k = queue.io_slices(&mut bufs);
///     let n = wire.write_vectored(&bufs[..k]).unwrap();
///     queue.advance(n);
///     session.handle_input(now, Input::Written { transport, bytes: n });
/// }
/// assert_eq!(session.unwritten(), 0);
/// ```
#[derive(Debug, Default)]
pub struct TransmitQueue {
    items: VecDeque<Transmit>,
    /// Bytes of the front Transmit already written.
    front_written: usize,
    /// Bytes not yet written, over every Transmit.
    bytes: usize,
}

impl TransmitQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a polled Transmit (empty ones are skipped).
    pub fn push(&mut self, t: Transmit) {
        if t.is_empty() {
            return;
        }
        self.bytes += t.len();
        self.items.push_back(t);
    }

    /// Bytes not yet written.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// True when everything was written.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// The transport the next write goes to.
    pub fn transport(&self) -> Option<TransportId> {
        self.items.front().map(|t| t.transport)
    }

    /// Fills `out` with the unwritten bytes of the front Transmits that go
    /// to one transport ([`TransmitQueue::transport`]), as many slices as
    /// fit, and returns how many it filled (0 when the queue is empty).
    /// Write `&out[..n]` with one vectored write, then
    /// [`TransmitQueue::advance`] by what the write returned.
    pub fn io_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let Some(transport) = self.transport() else {
            return 0;
        };
        let mut n = 0;
        let mut skip = self.front_written;
        for t in self.items.iter().take_while(|t| t.transport == transport) {
            for part in [t.head.as_slice(), &t.payload[..]] {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                let Some(slot) = out.get_mut(n) else {
                    return n;
                };
                *slot = IoSlice::new(&part[skip..]);
                n += 1;
                skip = 0;
            }
        }
        n
    }

    /// Bytes [`TransmitQueue::io_slices`] would cover for the front
    /// transport, without a slice limit.
    pub fn front_len(&self) -> usize {
        let Some(transport) = self.transport() else {
            return 0;
        };
        self.items
            .iter()
            .take_while(|t| t.transport == transport)
            .map(Transmit::len)
            .sum::<usize>()
            - self.front_written
    }

    /// Consumes `n` written bytes from the front; returns how many were
    /// consumed (less than `n` only when the queue ran out).
    pub fn advance(&mut self, mut n: usize) -> usize {
        let mut done = 0;
        while n > 0 {
            let Some(front) = self.items.front() else {
                break;
            };
            let take = n.min(front.len() - self.front_written);
            self.front_written += take;
            n -= take;
            done += take;
            if self.front_written == front.len() {
                self.items.pop_front();
                self.front_written = 0;
            }
        }
        self.bytes -= done;
        done
    }

    /// Drops the Transmits of `transport` (it was closed or failed; the
    /// session retransmits what the peer misses after a resume).
    pub fn discard(&mut self, transport: TransportId) {
        if self.transport() == Some(transport) {
            self.front_written = 0;
        }
        self.items.retain(|t| t.transport != transport);
        self.bytes = self.items.iter().map(Transmit::len).sum::<usize>() - self.front_written;
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.items.clear();
        self.front_written = 0;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameHead;
    use bytes::Bytes;

    fn tx(transport: TransportId, payload: &'static [u8]) -> Transmit {
        Transmit {
            transport,
            head: FrameHead::data(0, payload.len() as u32),
            payload: Bytes::from_static(payload),
        }
    }

    fn flat(q: &TransmitQueue, max: usize) -> (Option<TransportId>, Vec<u8>) {
        let mut v = vec![IoSlice::new(&[]); max];
        let n = q.io_slices(&mut v);
        (
            q.transport(),
            v[..n].iter().flat_map(|s| s.iter().copied()).collect(),
        )
    }

    #[test]
    fn partial_writes_walk_the_bytes_in_order() {
        let mut q = TransmitQueue::new();
        let (a, b) = (tx(1, b"hello"), tx(1, b"world!"));
        let mut all = Vec::new();
        a.write_to(&mut all);
        b.write_to(&mut all);
        q.push(a);
        q.push(b);
        q.push(tx(2, b"other"));
        assert_eq!(q.front_len(), all.len());
        let mut seen = Vec::new();
        for step in [1, 3, 13, 2, 100] {
            let (t, bytes) = flat(&q, 64);
            if q.transport() != Some(1) {
                break;
            }
            assert_eq!(t, Some(1));
            assert_eq!(bytes.len(), q.front_len());
            let n = step.min(bytes.len());
            seen.extend_from_slice(&bytes[..n]);
            assert_eq!(q.advance(n), n);
        }
        assert_eq!(seen, all);
        assert_eq!(q.transport(), Some(2));
        q.discard(2);
        assert!(q.is_empty());
        assert_eq!(q.advance(5), 0);
    }

    #[test]
    fn slice_limit_and_discard_mid_transmit() {
        let mut q = TransmitQueue::new();
        q.push(tx(1, b"abc"));
        q.push(tx(1, b"def"));
        let (_, one) = flat(&q, 1);
        assert_eq!(one.len(), FrameHead::data(0, 3).as_slice().len());
        q.advance(2);
        q.discard(1);
        assert_eq!((q.len(), q.front_len(), q.transport()), (0, 0, None));
    }
}
