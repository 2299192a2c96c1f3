//! Incremental Server-Sent-Events framing.
//!
//! Network chunks split anywhere: inside a line, inside a `\r\n`, inside a UTF-8 character.
//! [`SseFramer`] buffers only the current incomplete event and yields each complete event as
//! the exact bytes it had on the wire (terminator included), so callers can forward events
//! unchanged without re-encoding. [`data_of`] extracts the joined `data:` payload of one event.

use memchr::memchr2;

/// Splits a byte stream into complete SSE events (each ending with a blank line).
#[derive(Debug, Default)]
pub struct SseFramer {
    pending: Vec<u8>,
    /// Bytes of `pending` already scanned without finding an event end.
    scanned: usize,
}

impl SseFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held back because they do not yet form a complete event.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Feeds `chunk` and calls `on_event` with each complete event's raw bytes, in order.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(&[u8])) {
        if self.pending.is_empty() {
            // Fast path: frame directly out of the caller's chunk, buffer only the tail.
            let consumed = frame_events(chunk, 0, &mut on_event);
            self.pending.extend_from_slice(&chunk[consumed..]);
            self.scanned = self.pending.len();
            return;
        }
        self.pending.extend_from_slice(chunk);
        // An event end may straddle the previous boundary: rescan a few bytes back.
        let from = self.scanned.saturating_sub(3);
        let pending = std::mem::take(&mut self.pending);
        let consumed = frame_events(&pending, from, &mut on_event);
        self.pending = pending;
        self.pending.drain(..consumed);
        self.scanned = self.pending.len();
    }

    /// Takes whatever incomplete event remains at end of stream.
    pub fn take_rest(&mut self) -> Vec<u8> {
        self.scanned = 0;
        std::mem::take(&mut self.pending)
    }
}

/// Emits every complete event in `buf`; returns how many bytes were consumed.
/// `scan_from` is where to start looking for a terminator (events always start at 0).
fn frame_events(buf: &[u8], scan_from: usize, on_event: &mut impl FnMut(&[u8])) -> usize {
    let mut start = 0;
    let mut i = scan_from;
    while let Some(off) = memchr2(b'\n', b'\r', &buf[i..]) {
        let pos = i + off;
        // Length of the line terminator at `pos`, or None if it is split at the buffer end.
        let Some(first_len) = line_end_len(buf, pos) else {
            break;
        };
        let next = pos + first_len;
        match line_end_at(buf, next) {
            Some(0) => {
                i = next;
            }
            Some(second_len) => {
                let end = next + second_len;
                on_event(&buf[start..end]);
                start = end;
                i = end;
            }
            None => break,
        }
        if i >= buf.len() {
            break;
        }
    }
    start
}

/// Length of the line terminator at `pos` (1 or 2), or None when `\r` ends the buffer and a
/// following `\n` may still arrive.
fn line_end_len(buf: &[u8], pos: usize) -> Option<usize> {
    match buf[pos] {
        b'\n' => Some(1),
        _ => match buf.get(pos + 1) {
            Some(b'\n') => Some(2),
            Some(_) => Some(1),
            None => None,
        },
    }
}

/// Whether a line terminator (making a blank line) starts at `pos`: Some(len) if so, Some(0) if
/// another byte starts there, None if the buffer ends first.
fn line_end_at(buf: &[u8], pos: usize) -> Option<usize> {
    match buf.get(pos) {
        None => None,
        Some(b'\n') | Some(b'\r') => line_end_len(buf, pos),
        Some(_) => Some(0),
    }
}

/// The `event:` name and the joined `data:` payload of one complete event.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseEvent<'a> {
    pub event: Option<&'a [u8]>,
    /// `data:` lines joined with `\n`; borrowed when there is a single data line.
    pub data: std::borrow::Cow<'a, [u8]>,
    pub has_data: bool,
}

/// Parses one raw event (as yielded by [`SseFramer`]) into its name and data.
pub fn parse_event(raw: &[u8]) -> SseEvent<'_> {
    let mut ev = SseEvent::default();
    for line in Lines(raw) {
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if ev.has_data {
                    let mut joined = ev.data.into_owned();
                    joined.push(b'\n');
                    joined.extend_from_slice(value);
                    ev.data = std::borrow::Cow::Owned(joined);
                } else {
                    ev.data = std::borrow::Cow::Borrowed(value);
                    ev.has_data = true;
                }
            }
            b"event" => ev.event = Some(value),
            _ => {}
        }
    }
    ev
}

/// Iterates the lines of an event, accepting `\n`, `\r\n` and lone `\r` line ends.
struct Lines<'a>(&'a [u8]);

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.0.is_empty() {
            return None;
        }
        let (line, rest) = match memchr2(b'\n', b'\r', self.0) {
            Some(i) => {
                let skip = if self.0[i] == b'\r' && self.0.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                (&self.0[..i], &self.0[i + skip..])
            }
            None => (self.0, &b""[..]),
        };
        self.0 = rest;
        Some(line)
    }
}

/// Appends `data: <payload>\n\n` to `out`.
pub fn write_data_event(out: &mut Vec<u8>, payload: &[u8]) {
    out.reserve(payload.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut f = SseFramer::new();
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, |e| out.push(e.to_vec()));
        }
        out
    }

    #[test]
    fn frames_events_with_every_line_ending() {
        let stream = b"data: a\n\ndata: b\r\n\r\nevent: x\ndata: c\r\rdata: d\n\n";
        let whole = frame_all(&[stream]);
        assert_eq!(whole.len(), 4, "{whole:?}");
        assert_eq!(whole[0], b"data: a\n\n");
        assert_eq!(whole[1], b"data: b\r\n\r\n");
        assert_eq!(whole[2], b"event: x\ndata: c\r\r");
        for split in 0..stream.len() {
            let parts = frame_all(&[&stream[..split], &stream[split..]]);
            // A split between `\r` and `\r` cannot be told from CRLF until the next byte: the
            // framer must wait, never emit early.
            assert_eq!(parts, whole, "split at {split}");
        }
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let stream = b": keepalive\n\ndata: {\"x\":\"\xc3\xa9\"}\n\ndata: [DONE]\n\n";
        let whole = frame_all(&[stream]);
        let mut f = SseFramer::new();
        let mut out = Vec::new();
        for b in stream.iter() {
            f.feed(std::slice::from_ref(b), |e| out.push(e.to_vec()));
        }
        assert_eq!(out, whole);
        assert!(f.pending().is_empty());
    }

    #[test]
    fn parses_name_and_multiline_data() {
        let ev = parse_event(b"event: message_start\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n");
        assert_eq!(ev.event, Some(&b"message_start"[..]));
        assert_eq!(&*ev.data, b"{\"a\":\n1}");
        let ev = parse_event(b"data:no-space\n\n");
        assert_eq!(&*ev.data, b"no-space");
        let ev = parse_event(b"data: x\r\r");
        assert_eq!(&*ev.data, b"x");
    }
}
