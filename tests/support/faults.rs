//! A fault-injecting upstream: raw tokio on loopback that reads one request per connection and
//! then plays a script of byte-level steps (write, trickle, pause, repeat forever, reset with
//! SO_LINGER 0, close), counting the connections it holds open so tests can check that the
//! gateway let go of every upstream socket after a fault.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{read_request, spawn_server, Recorded};

/// One thing the mock does on the connection, in order.
#[derive(Debug, Clone)]
pub enum Step {
    Write(Vec<u8>),
    /// Writes these bytes one at a time with this pause between them.
    Trickle(Vec<u8>, Duration),
    Sleep(Duration),
    /// Writes these bytes again and again with this pause between, until the peer goes away.
    Forever(Vec<u8>, Duration),
    /// Sends nothing more but keeps the connection until the peer closes it.
    Hold,
    /// Aborts the connection: SO_LINGER 0, so the peer gets a TCP RST.
    Reset,
    /// Closes the connection normally (FIN).
    Close,
}

/// A fault-injecting upstream; see the module doc.
pub struct FaultUpstream {
    pub addr: SocketAddr,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

/// Decrements the open-connection count when the connection's task ends.
struct OpenGuard(Arc<AtomicUsize>);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FaultUpstream {
    pub fn start(script: impl Fn(&Recorded) -> Vec<Step> + Send + Sync + 'static) -> Self {
        let script = Arc::new(script);
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (o, a) = (open.clone(), accepted.clone());
        let addr = spawn_server("127.0.0.1", move |sock| {
            o.fetch_add(1, Ordering::SeqCst);
            a.fetch_add(1, Ordering::SeqCst);
            let guard = OpenGuard(o.clone());
            let script = script.clone();
            async move {
                let _guard = guard;
                let _ = serve(sock, &*script).await;
            }
        });
        FaultUpstream {
            addr,
            open,
            accepted,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections the gateway holds open to this mock right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits (up to `within`) until no connection to this mock is open; the count left.
    pub async fn settle(&self, within: Duration) -> usize {
        let until = Instant::now() + within;
        while self.open() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.open()
    }
}

async fn serve(
    mut sock: TcpStream,
    script: &(dyn Fn(&Recorded) -> Vec<Step> + Send + Sync),
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    // One script per request; a script that ends without Close/Reset/Hold/Forever leaves the
    // connection open for the next request. Ending the connection is an Err, which drops it.
    while let Some(rec) = read_request(&mut sock, &mut buf).await? {
        play(&mut sock, script(&rec)).await?;
    }
    Ok(())
}

async fn play(sock: &mut TcpStream, steps: Vec<Step>) -> std::io::Result<()> {
    let ended = || Err(std::io::ErrorKind::ConnectionAborted.into());
    for step in steps {
        match step {
            Step::Write(b) => {
                sock.write_all(&b).await?;
                sock.flush().await?;
            }
            Step::Trickle(b, pause) => {
                for byte in b {
                    sock.write_all(&[byte]).await?;
                    sock.flush().await?;
                    tokio::time::sleep(pause).await;
                }
            }
            Step::Sleep(d) => tokio::time::sleep(d).await,
            Step::Forever(b, pause) => loop {
                sock.write_all(&b).await?;
                sock.flush().await?;
                tokio::time::sleep(pause).await;
            },
            Step::Hold => {
                let mut tmp = [0u8; 1024];
                loop {
                    use tokio::io::AsyncReadExt;
                    if sock.read(&mut tmp).await? == 0 {
                        return ended();
                    }
                }
            }
            Step::Reset => {
                // Deprecated because a non-zero linger blocks in drop; zero never does. The
                // socket is dropped by the caller when this returns.
                #[allow(deprecated)]
                sock.set_linger(Some(Duration::ZERO))?;
                return ended();
            }
            Step::Close => {
                sock.shutdown().await?;
                return ended();
            }
        }
    }
    Ok(())
}

/// A 200 chunked response head that lets the connection be reused.
pub fn head_chunked_keep_alive(content_type: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n")
        .into_bytes()
}

/// A response head with Content-Length.
pub fn head_len(status: u16, content_type: &str, len: usize) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} Status\r\ncontent-type: {content_type}\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// A 200 chunked response head.
pub fn head_chunked(content_type: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// One chunk of a chunked body.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
    c.extend_from_slice(data);
    c.extend_from_slice(b"\r\n");
    c
}

/// The last chunk of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
