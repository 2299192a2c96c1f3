//! Fixed-rate load of streamed answers, measuring time to first byte (benches/load.sh, issue 17
//! item 6).
//!
//! `stream_ttfb HOST:PORT PATH BODY_FILE KEY RATE SECONDS CONNS`
//!
//! Open loop: request `i` is handed out at `start + i / RATE` (as closely as tokio's millisecond
//! timer allows) and goes out on the first free keep-alive connection; time to first byte (the
//! first byte of the body after the response head) and the whole answer are measured from when
//! it was handed out, so a request waiting for a connection behind a stalled one counts its wait
//! (no coordinated omission). HTTP/1.1 is written
//! and read by hand (Content-Length and chunked bodies) so that the client adds as little as
//! possible of its own to the figures and does the same work for every target.
//!
//! Prints one line: `TTFBRESULT sent= answered= errors= rps= ttfb_p50_us= ttfb_p90_us= ttfb_p99_us=
//! ttfb_max_us= total_p50_us= total_p99_us= body_bytes=` (body_bytes: of the last answer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Tally {
    ttfb_us: Vec<u64>,
    total_us: Vec<u64>,
    errors: u64,
    last_body_bytes: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 8 {
        eprintln!("usage: stream_ttfb HOST:PORT PATH BODY_FILE KEY RATE SECONDS CONNS");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let body = std::fs::read(&args[3]).unwrap_or_else(|e| fail(&format!("{}: {e}", args[3])));
    let rate: f64 = args[5]
        .parse()
        .unwrap_or_else(|_| fail("RATE must be a number"));
    let seconds: f64 = args[6]
        .parse()
        .unwrap_or_else(|_| fail("SECONDS must be a number"));
    let conns: usize = args[7]
        .parse()
        .unwrap_or_else(|_| fail("CONNS must be a number"));
    if rate <= 0.0 || seconds <= 0.0 || conns == 0 {
        fail("RATE, SECONDS and CONNS must be positive");
    }
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: text/event-stream\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        args[2],
        args[4],
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (sent, tally, elapsed) =
        runtime.block_on(run(addr, Arc::new(request), rate, seconds, conns));
    report(sent, tally, elapsed);
}

fn fail(msg: &str) -> ! {
    eprintln!("stream_ttfb: {msg}");
    std::process::exit(2);
}

async fn run(
    addr: String,
    request: Arc<Vec<u8>>,
    rate: f64,
    seconds: f64,
    conns: usize,
) -> (u64, Tally, Duration) {
    let total = (rate * seconds).round().max(1.0) as u64;
    let (tx, rx) = mpsc::channel::<Instant>(total as usize);
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::with_capacity(conns);
    for _ in 0..conns {
        workers.push(tokio::spawn(worker(
            addr.clone(),
            Arc::clone(&request),
            Arc::clone(&rx),
        )));
    }
    let start = Instant::now() + Duration::from_millis(20);
    let interval = Duration::from_secs_f64(1.0 / rate);
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        // The clock starts when the request is handed out, not at `due`: tokio's timer wakes
        // up to a millisecond late, and that lag is the client's, not the server's.
        if tx.send(Instant::now()).await.is_err() {
            break;
        }
    }
    drop(tx);
    let mut tally = Tally::default();
    for w in workers {
        if let Ok(t) = w.await {
            tally.ttfb_us.extend(t.ttfb_us);
            tally.total_us.extend(t.total_us);
            tally.errors += t.errors;
            tally.last_body_bytes = tally.last_body_bytes.max(t.last_body_bytes);
        }
    }
    (total, tally, start.elapsed())
}

async fn worker(
    addr: String,
    request: Arc<Vec<u8>>,
    rx: Arc<Mutex<mpsc::Receiver<Instant>>>,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let handed_out = match rx.lock().await.recv().await {
            Some(handed_out) => handed_out,
            None => return tally,
        };
        if conn.is_none() {
            match TcpStream::connect(&addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    conn = Some(s);
                }
                Err(_) => {
                    tally.errors += 1;
                    continue;
                }
            }
        }
        let stream = conn.as_mut().expect("connected above");
        let outcome = tokio::time::timeout(
            REQUEST_TIMEOUT,
            exchange(stream, &request, &mut buf, handed_out),
        )
        .await;
        match outcome {
            Ok(Ok(answer)) => {
                tally.ttfb_us.push(answer.ttfb.as_micros() as u64);
                tally.total_us.push(answer.total.as_micros() as u64);
                tally.last_body_bytes = answer.body_bytes;
                if !answer.keep_alive {
                    conn = None;
                }
            }
            _ => {
                tally.errors += 1;
                conn = None;
            }
        }
    }
}

struct Answer {
    ttfb: Duration,
    total: Duration,
    body_bytes: usize,
    keep_alive: bool,
}

/// Sends one request and reads its whole answer; a status other than 200 is an error.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
    handed_out: Instant,
) -> std::io::Result<Answer> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    stream.write_all(request).await?;
    buf.clear();
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("head is not UTF-8"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(bad("status is not 200"));
    }
    let mut content_length = None;
    let mut chunked = false;
    let mut keep_alive = true;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse::<usize>().map_err(|_| bad("content-length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    while buf.len() == head_end {
        read_more(stream, buf).await?;
    }
    let ttfb = handed_out.elapsed();
    let body_bytes = if chunked {
        read_chunked(stream, buf, head_end).await?
    } else if let Some(len) = content_length {
        while buf.len() < head_end + len {
            read_more(stream, buf).await?;
        }
        len
    } else {
        // Neither: the body runs to the end of the connection.
        while read_more(stream, buf).await.is_ok() {}
        keep_alive = false;
        buf.len() - head_end
    };
    Ok(Answer {
        ttfb,
        total: handed_out.elapsed(),
        body_bytes,
        keep_alive,
    })
}

/// Reads a chunked body that starts at `pos` to its last chunk; returns the data bytes.
async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut pos: usize,
) -> std::io::Result<usize> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk");
    let mut data = 0;
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf[pos..], b"\r\n") {
                break pos + i;
            }
            read_more(stream, buf).await?;
        };
        let size_text = std::str::from_utf8(&buf[pos..line_end]).map_err(|_| bad())?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad())?;
        pos = line_end + 2;
        if size == 0 {
            // No trailers are expected: the last chunk is followed by one empty line.
            while buf.len() < pos + 2 {
                read_more(stream, buf).await?;
            }
            return Ok(data);
        }
        while buf.len() < pos + size + 2 {
            read_more(stream, buf).await?;
        }
        data += size;
        pos += size + 2;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let len = buf.len();
    buf.resize(len + 16 * 1024, 0);
    let n = stream.read(&mut buf[len..]).await;
    let n = match n {
        Ok(n) => n,
        Err(e) => {
            buf.truncate(len);
            return Err(e);
        }
    };
    buf.truncate(len + n);
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn report(sent: u64, mut tally: Tally, elapsed: Duration) {
    tally.ttfb_us.sort_unstable();
    tally.total_us.sort_unstable();
    let pct = |v: &[u64], p: f64| -> u64 {
        if v.is_empty() {
            return 0;
        }
        let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[i.clamp(1, v.len()) - 1]
    };
    let ok = tally.ttfb_us.len();
    println!(
        "TTFBRESULT sent={sent} answered={ok} errors={} rps={:.0} ttfb_p50_us={} ttfb_p90_us={} \
         ttfb_p99_us={} ttfb_max_us={} total_p50_us={} total_p99_us={} body_bytes={}",
        tally.errors,
        ok as f64 / elapsed.as_secs_f64(),
        pct(&tally.ttfb_us, 50.0),
        pct(&tally.ttfb_us, 90.0),
        pct(&tally.ttfb_us, 99.0),
        tally.ttfb_us.last().copied().unwrap_or(0),
        pct(&tally.total_us, 50.0),
        pct(&tally.total_us, 99.0),
        tally.last_body_bytes,
    );
}
