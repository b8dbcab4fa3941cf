//! A minimal HTTP/1.1 keep-alive client for the load: one connection per worker, requests
//! written as bytes, answers read by Content-Length. A general client (reqwest) cost the
//! load generator about as much CPU as the server it measured, on the same two cores;
//! this one leaves the cores to the server, as redis-benchmark and pgbench do.

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct Connection {
    address: String,
    stream: Option<BufReader<TcpStream>>,
    buffer: Vec<u8>,
}

impl Connection {
    /// `base` is `http://host:port`.
    pub fn new(base: &str) -> Self {
        Self {
            address: base.trim_start_matches("http://").to_owned(),
            stream: None,
            buffer: Vec::with_capacity(4096),
        }
    }

    /// Sends one request and returns the answer's status; the connection is reopened on
    /// the next call after any failure.
    pub async fn send(&mut self, request: &[u8]) -> std::io::Result<u16> {
        let result = self.exchange(request).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<u16> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.address).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(BufReader::new(stream));
        }
        let stream = self.stream.as_mut().expect("connected");
        stream.get_mut().write_all(request).await?;
        let (status, length) = read_head(stream, &mut self.buffer).await?;
        self.buffer.resize(length, 0);
        stream.read_exact(&mut self.buffer).await?;
        Ok(status)
    }
}

/// Reads the status line and headers; returns the status and the body's length.
async fn read_head(
    stream: &mut BufReader<TcpStream>,
    line: &mut Vec<u8>,
) -> std::io::Result<(u16, usize)> {
    use tokio::io::AsyncBufReadExt;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    line.clear();
    if stream.read_until(b'\n', line).await? == 0 {
        return Err(bad("connection closed"));
    }
    let status = std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut length = 0;
    loop {
        line.clear();
        stream.read_until(b'\n', line).await?;
        if line == b"\r\n" || line.is_empty() {
            return Ok((status, length));
        }
        let header = String::from_utf8_lossy(line);
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value
                    .trim()
                    .parse()
                    .map_err(|_| bad("bad content-length"))?;
            }
        }
    }
}

pub fn get(path: &str, token: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n")
        .into_bytes()
}

pub fn post_json(path: &str, token: &str, idempotency_key: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
         Idempotency-Key: {idempotency_key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
