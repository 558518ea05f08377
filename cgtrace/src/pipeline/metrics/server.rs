//! The `/metrics` endpoint: a minimal HTTP/1.1 server (GET and HEAD of `/metrics` and
//! `/healthz`), bounded in connections, request size and time.
use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::timeout,
};

use super::{CONTENT_TYPE, MetricsState};

/// Parses `--metrics`: `9101` or `:9101` listen on 127.0.0.1 (only what is asked for is
/// exposed); `localhost:9101`, `0.0.0.0:9101`, `[::]:9101`, `10.0.0.1:9101` as given.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    let examples = "examples: 9101, :9101, 127.0.0.1:9101, 0.0.0.0:9101, [::]:9101";
    let port_only = t.strip_prefix(':').unwrap_or(t);
    let addr = if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = port_only
            .parse()
            .map_err(|_| format!("invalid port in listen address {s:?} (1-65535)"))?;
        SocketAddr::from(([127, 0, 0, 1], port))
    } else if let Some(port) = t.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port in listen address {s:?} (1-65535)"))?;
        SocketAddr::from(([127, 0, 0, 1], port))
    } else {
        t.parse()
            .map_err(|_| format!("invalid listen address {s:?} ({examples})"))?
    };
    if addr.port() == 0 {
        return Err(format!(
            "listen address {s:?} has port 0; give a port ({examples})"
        ));
    }
    Ok(addr)
}

/// Longest request head (request line and headers) read.
pub(super) const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request head, and to take the response.
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at accept.
pub(super) const MAX_CONNECTIONS: usize = 64;

/// Serves `/metrics` and `/healthz` forever on a listener the caller bound (to learn the port of
/// `:0`, or to report a bind error before attaching), one task per connection.
pub async fn serve_listener(
    listener: TcpListener,
    state: Arc<Mutex<MetricsState>>,
) -> io::Result<()> {
    serve_with(listener, state, IO_TIMEOUT).await
}

/// Decrements the connection count when a connection task ends.
pub(super) struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) async fn serve_with(
    listener: TcpListener,
    state: Arc<Mutex<MetricsState>>,
    io_timeout: Duration,
) -> io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                log::warn!("metrics server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if active.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let slot = ConnectionSlot(active.clone());
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = handle(stream, &state, io_timeout).await {
                log::debug!("metrics server: connection: {e}");
            }
        });
    }
}

/// How reading a request head ended.
pub(super) enum Head {
    /// The request line.
    Line(String),
    /// The client closed before sending a line.
    Closed,
    /// The head exceeded [`MAX_REQUEST_HEAD`].
    TooLarge,
}

/// Reads the request head (up to the blank line) and returns its first line.
async fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut buf = vec![0u8; MAX_REQUEST_HEAD];
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Ok(Head::TooLarge);
        }
        let n = stream.read(&mut buf[len..]).await?;
        let eof = n == 0;
        len += n;
        let head = &buf[..len];
        let complete =
            head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n");
        if complete || (eof && head.contains(&b'\n')) {
            let end = head.iter().position(|&b| b == b'\n').unwrap_or(len);
            let line = String::from_utf8_lossy(&head[..end]);
            return Ok(Head::Line(line.trim_end_matches('\r').to_string()));
        }
        if eof {
            return Ok(Head::Closed);
        }
    }
}

pub(super) fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        r.push_str("Allow: GET, HEAD\r\n");
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    if !head_only {
        r.extend_from_slice(body.as_bytes());
    }
    r
}

pub(super) const TEXT: &str = "text/plain; charset=utf-8";

/// The response to a request line.
pub(super) fn route(line: &str, state: &Mutex<MetricsState>) -> Vec<u8> {
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return response("400 Bad Request", TEXT, "bad request\n", false);
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return response("405 Method Not Allowed", TEXT, "only GET and HEAD\n", false);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    match path {
        "/metrics" => {
            let body = lock().scrape();
            response("200 OK", CONTENT_TYPE, &body, head_only)
        }
        "/healthz" => match lock().unhealthy_reason() {
            None => response("200 OK", TEXT, "ok\n", head_only),
            Some(why) => response(
                "503 Service Unavailable",
                TEXT,
                &format!("unhealthy: {why}\n"),
                head_only,
            ),
        },
        _ => response(
            "404 Not Found",
            TEXT,
            "not found: try /metrics or /healthz\n",
            head_only,
        ),
    }
}

async fn handle(
    mut stream: TcpStream,
    state: &Mutex<MetricsState>,
    io_timeout: Duration,
) -> io::Result<()> {
    let reply = match timeout(io_timeout, read_head(&mut stream)).await {
        Ok(Ok(Head::Line(line))) => route(&line, state),
        Ok(Ok(Head::Closed)) => return Ok(()),
        Ok(Ok(Head::TooLarge)) => response(
            "431 Request Header Fields Too Large",
            TEXT,
            "request head too large\n",
            false,
        ),
        Ok(Err(e)) => return Err(e),
        Err(_) => response("408 Request Timeout", TEXT, "request timeout\n", false),
    };
    match timeout(io_timeout, async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client too slow taking the response",
        )),
    }
}
