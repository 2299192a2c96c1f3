//! Decoding a compressed response body on the side (`Content-Encoding` gzip, deflate, br,
//! zstd), so native passthrough can read usage from it while the client receives the
//! provider's bytes unchanged.
//!
//! The decoders are the write-side ones of the crates Pingora already links (flate2, brotli,
//! zstd): each chunk is pushed in as it arrives and its plain bytes come out at once, so a
//! stream is metered event by event. Output is capped: a body that decodes to more than the
//! limit (a decompression bomb, or simply too much to meter) stops the side copy.

use std::io::{self, Write};

/// Collects decoded bytes, refusing more than `limit` in total.
struct Capped {
    buf: Vec<u8>,
    total: u64,
    limit: u64,
}

impl Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.total += bytes.len() as u64;
        if self.total > self.limit {
            return Err(io::Error::other(
                "the decoded body is over the metering limit",
            ));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Inner {
    Gzip(flate2::write::GzDecoder<Capped>),
    /// HTTP's `deflate` is zlib-wrapped (RFC 9110 §8.4.1.2); some servers send it raw, which
    /// the first byte tells apart. Decided at the first byte.
    DeflateUndecided(Capped),
    Zlib(flate2::write::ZlibDecoder<Capped>),
    RawDeflate(flate2::write::DeflateDecoder<Capped>),
    Brotli(Box<brotli::DecompressorWriter<Capped>>),
    Zstd(zstd::stream::write::Decoder<'static, Capped>),
}

/// A decoder for one response body.
pub struct SideDecoder(Inner);

/// A `Content-Encoding` the side decoder cannot read (or a list of several codings).
#[derive(Debug, PartialEq, Eq)]
pub struct Unsupported;

/// The codings [`SideDecoder`] reads, for the `Accept-Encoding` the gateway forwards.
pub const DECODABLE: [&str; 6] = ["gzip", "x-gzip", "deflate", "br", "zstd", "identity"];

impl SideDecoder {
    /// The decoder for a `Content-Encoding` value: `Ok(None)` for none (or `identity`),
    /// [`Unsupported`] for a coding (or a list of several) it cannot read.
    pub fn for_encoding(value: &[u8], limit: u64) -> Result<Option<SideDecoder>, Unsupported> {
        let coding = value.trim_ascii();
        let sink = Capped {
            buf: Vec::new(),
            total: 0,
            limit,
        };
        let inner = if coding.is_empty() || coding.eq_ignore_ascii_case(b"identity") {
            return Ok(None);
        } else if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
            Inner::Gzip(flate2::write::GzDecoder::new(sink))
        } else if coding.eq_ignore_ascii_case(b"deflate") {
            Inner::DeflateUndecided(sink)
        } else if coding.eq_ignore_ascii_case(b"br") {
            Inner::Brotli(Box::new(brotli::DecompressorWriter::new(sink, 4096)))
        } else if coding.eq_ignore_ascii_case(b"zstd") {
            Inner::Zstd(zstd::stream::write::Decoder::new(sink).map_err(|_| Unsupported)?)
        } else {
            return Err(Unsupported);
        };
        Ok(Some(SideDecoder(inner)))
    }

    /// Decodes one chunk; the plain bytes it yields (possibly none yet) are returned.
    pub fn decode(&mut self, chunk: &[u8]) -> io::Result<&[u8]> {
        if let Inner::DeflateUndecided(_) = &self.0 {
            let Some(&first) = chunk.first() else {
                return Ok(&[]);
            };
            let Inner::DeflateUndecided(sink) = std::mem::replace(
                &mut self.0,
                Inner::DeflateUndecided(Capped {
                    buf: Vec::new(),
                    total: 0,
                    limit: 0,
                }),
            ) else {
                unreachable!("checked above")
            };
            // A zlib header starts with CM = 8 (deflate) in the low nibble.
            self.0 = if first & 0x0F == 8 {
                Inner::Zlib(flate2::write::ZlibDecoder::new(sink))
            } else {
                Inner::RawDeflate(flate2::write::DeflateDecoder::new(sink))
            };
        }
        let sink = match &mut self.0 {
            Inner::Gzip(d) => write(d, chunk)?,
            Inner::Zlib(d) => write(d, chunk)?,
            Inner::RawDeflate(d) => write(d, chunk)?,
            Inner::Brotli(d) => write(&mut **d, chunk)?,
            Inner::Zstd(d) => write(d, chunk)?,
            Inner::DeflateUndecided(_) => unreachable!("decided above"),
        };
        Ok(&sink.buf)
    }
}

/// The sink of a write-side decoder.
trait Sink: Write {
    fn sink(&mut self) -> &mut Capped;
}

macro_rules! sink {
    ($($t:ty),*) => {$(
        impl Sink for $t {
            fn sink(&mut self) -> &mut Capped {
                self.get_mut()
            }
        }
    )*};
}
sink!(
    flate2::write::GzDecoder<Capped>,
    flate2::write::ZlibDecoder<Capped>,
    flate2::write::DeflateDecoder<Capped>,
    brotli::DecompressorWriter<Capped>,
    zstd::stream::write::Decoder<'static, Capped>
);

/// Pushes `chunk` through `decoder` and flushes, so everything decodable so far is in the
/// sink (emptied first: the caller has read the previous chunk's bytes).
fn write<'a, D: Sink>(decoder: &'a mut D, chunk: &[u8]) -> io::Result<&'a mut Capped> {
    decoder.sink().buf.clear();
    decoder.write_all(chunk)?;
    decoder.flush()?;
    Ok(decoder.sink())
}

/// The caller's `Accept-Encoding` without the codings [`SideDecoder`] cannot read (and `*`),
/// so whatever the provider chooses can still be metered; `None` when nothing is left.
pub fn decodable_accept_encoding(value: &str) -> Option<String> {
    let kept: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|item| {
            let coding = item.split(';').next().unwrap_or_default().trim();
            DECODABLE.iter().any(|c| coding.eq_ignore_ascii_case(c))
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(coding: &str, body: &[u8], piece: usize) -> Vec<u8> {
        let mut d = SideDecoder::for_encoding(coding.as_bytes(), 1 << 20)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        for p in body.chunks(piece) {
            out.extend_from_slice(d.decode(p).unwrap());
        }
        out
    }

    #[test]
    fn decodes_every_coding_chunk_by_chunk() {
        let plain = br#"{"usage":{"prompt_tokens":3,"completion_tokens":5}}"#.repeat(20);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zl.write_all(&plain).unwrap();
        let zl = zl.finish().unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        raw.write_all(&plain).unwrap();
        let raw = raw.finish().unwrap();
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(&plain).unwrap();
        }
        let zs = zstd::encode_all(&plain[..], 3).unwrap();
        for (coding, body) in [
            ("gzip", &gz),
            ("X-Gzip", &gz),
            ("deflate", &zl),
            ("deflate", &raw),
            ("br", &br),
            ("zstd", &zs),
        ] {
            for piece in [1, 7, 4096] {
                assert_eq!(
                    decode_all(coding, body, piece),
                    plain,
                    "{coding} by {piece}"
                );
            }
        }
        assert!(SideDecoder::for_encoding(b"identity", 1).unwrap().is_none());
        assert!(SideDecoder::for_encoding(b"", 1).unwrap().is_none());
        assert!(SideDecoder::for_encoding(b"compress", 1).is_err());
        assert!(SideDecoder::for_encoding(b"gzip, br", 1).is_err());
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b'a'; 8 << 20]).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < 64 * 1024);
        let mut d = SideDecoder::for_encoding(b"gzip", 1 << 20)
            .unwrap()
            .unwrap();
        assert!(d.decode(&gz).is_err());
    }

    #[test]
    fn accept_encoding_keeps_only_decodable_codings() {
        assert_eq!(
            decodable_accept_encoding("gzip, deflate, br;q=0.9, compress, *;q=0.1").as_deref(),
            Some("gzip, deflate, br;q=0.9")
        );
        assert_eq!(decodable_accept_encoding("xz, *"), None);
    }
}
