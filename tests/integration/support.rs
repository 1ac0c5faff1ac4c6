//! Helpers shared by tests/serve_api.rs and tests/serve_browser.rs: start the
//! real `cbr serve` binary, and a tiny HTTP/1.1 client over std's TcpStream
//! (enough for JSON, multipart uploads and WebDriver; no extra dependency).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A running `cbr serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `cbr serve --addr 127.0.0.1:0 --models DIR extra...` and waits for
    /// the address it prints.
    pub fn start(models: &Path, extra: &[&str]) -> Server {
        Self::start_env(models, extra, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_env(models: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cbr"))
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .args(["serve", "--addr", "127.0.0.1:0", "--models"])
            .arg(models)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start `cbr serve`");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().expect("cbr serve exited before listening").expect("stdout");
        let addr = line
            .rsplit("http://")
            .next()
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from cbr serve: {line:?}"));
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Kill -9: no chance to clean up (a crash).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Resp {
    let ct: Vec<(&str, &str)> = content_type.map(|c| ("Content-Type", c)).into_iter().collect();
    request_with(addr, method, path, &ct, body)
}

/// [`request`] with extra headers; a `Host` among them replaces the default.
pub fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = send_head(addr, method, path, headers, body.len());
    // The server may answer (413) before reading the whole body: ignore a broken pipe.
    let _ = s.write_all(body);
    read_response(&mut s, method, path)
}

/// Connects and sends a request's head announcing `len` body bytes; the
/// caller sends the body (or not: a stalled client).
pub fn send_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    len: usize,
) -> TcpStream {
    let mut s =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    head.push_str(&format!("Connection: close\r\nContent-Length: {len}\r\n"));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s
}

/// Reads one response from `s` (after [`send_head`] and the body).
pub fn read_response(s: &mut TcpStream, method: &str, path: &str) -> Resp {
    // Read the head, then as much body as Content-Length says (some servers,
    // like chromedriver, keep the connection open despite `Connection: close`).
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head.lines().find_map(|l| {
                l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok())
            });
            let chunked = head.contains("transfer-encoding: chunked");
            let done = match len {
                Some(n) => raw.len() >= end + 4 + n,
                None if chunked => raw.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if done {
                break;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    parse_response(&raw).unwrap_or_else(|| {
        panic!("{method} {path}: malformed response: {:?}", String::from_utf8_lossy(&raw))
    })
}

fn parse_response(raw: &[u8]) -> Option<Resp> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if let Some(n) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(n);
    }
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Some(Resp { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[..nl]).ok()?.split(';').next()?.trim(),
            16,
        )
        .ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, None, &[])
}

pub fn delete(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "DELETE", path, None, &[])
}

pub fn post_json(addr: SocketAddr, path: &str, v: &Value) -> Resp {
    request(addr, "POST", path, Some("application/json"), v.to_string().as_bytes())
}

/// A multipart/form-data body with one `file` part per (file name, bytes).
pub fn multipart(files: &[(String, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = "cbr-test-boundary-7d1f0a";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub fn post_files(addr: SocketAddr, path: &str, files: &[(String, Vec<u8>)]) -> Resp {
    let (ct, body) = multipart(files);
    request(addr, "POST", path, Some(&ct), &body)
}

/// Files read from paths, named by their file names.
pub fn read_files(paths: &[std::path::PathBuf]) -> Vec<(String, Vec<u8>)> {
    paths
        .iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(p).unwrap()))
        .collect()
}

/// Percent-encodes a path segment.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Polls the build status until it is no longer queued/running; returns it.
pub fn wait_build(addr: SocketAddr, model: &str, timeout: Duration) -> Value {
    let start = std::time::Instant::now();
    loop {
        let r = get(addr, &format!("/api/models/{}/build", enc(model)));
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let st = v["state"].as_str().unwrap().to_string();
        if st != "running" && st != "queued" {
            return v;
        }
        assert!(start.elapsed() < timeout, "build of {model} did not finish in {timeout:?}: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The first `n` image files of a class folder (sorted), and the rest.
pub fn class_images(dir: &Path, n: usize) -> (Vec<std::path::PathBuf>, Vec<std::path::PathBuf>) {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    let rest = v.split_off(n.min(v.len()));
    (v, rest)
}
