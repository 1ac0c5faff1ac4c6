//! Who may call the server: the Host header (against DNS rebinding), the
//! Origin of state-changing requests (against cross-site requests from any
//! web page the user visits), and an access token (required when the server
//! listens beyond loopback).
//!
//! - Host: IP literals, `localhost` and `*.localhost` cannot be rebound by a
//!   web page's DNS, so they are always accepted; any other name only when
//!   given with `--allow-host` (`*` accepts any, for use behind a proxy that
//!   checks it). Otherwise 403 `host_not_allowed`.
//! - Origin: a POST/DELETE from a browser carries `Origin`; it must be the
//!   server's own (same host and port as Host) or one given with
//!   `--allow-origin`. Requests without Origin (curl, scripts) pass. There is
//!   no CORS: a cross-origin page cannot read any answer. Otherwise 403
//!   `origin_not_allowed`.
//! - Token: `Authorization: Bearer TOKEN`, or the cookie set when the page is
//!   opened as `/?token=TOKEN` (Jupyter-style), compared in constant time.
//!   Otherwise 401 `unauthorized`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// The access rules of one server.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Host names accepted besides IP literals and localhost (lowercase; `*`: any).
    pub allow_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) accepted besides the server's own.
    pub allow_origins: Vec<String>,
    /// The token every request must carry, if any.
    pub token: Option<String>,
    /// The port the server listens on: the token cookie's name carries it, so
    /// two servers on one host keep their own.
    pub port: u16,
}

impl Access {
    fn cookie_name(&self) -> String {
        format!("cbr_token_{}", self.port)
    }
}

/// A fresh random token: 32 bytes from the OS generator, as hex.
pub fn random_token() -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("cannot make a random token: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The host name and port of a Host header value (`name`, `name:port`,
/// `[v6]`, `[v6]:port`), the name lowercased without a trailing dot.
fn split_host(v: &str) -> Option<(String, Option<u16>)> {
    let v = v.trim();
    let (name, port) = if let Some(rest) = v.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        (format!("[{ip}]"), port)
    } else {
        match v.rsplit_once(':') {
            Some((n, p)) => (n.to_string(), Some(p.parse().ok()?)),
            None => (v.to_string(), None),
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return None;
    }
    Some((name, port))
}

/// Names a web page cannot point at another address through its own DNS.
fn cannot_be_rebound(name: &str) -> bool {
    if let Some(ip) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return ip.parse::<std::net::Ipv6Addr>().is_ok();
    }
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
}

impl Access {
    /// Whether a request with this Host header value may be served.
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some((name, _)) = split_host(host) else { return false };
        cannot_be_rebound(&name) || self.allow_hosts.iter().any(|h| h == "*" || *h == name)
    }

    /// Whether a state-changing request with this Origin may be served, given
    /// its Host header value.
    pub fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.allow_origins.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(&origin))
        {
            return true;
        }
        let Some((scheme, authority)) = origin.split_once("://") else { return false };
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        let (Some((o_name, o_port)), Some((h_name, h_port))) =
            (split_host(authority), split_host(host))
        else {
            return false;
        };
        let o_port = o_port.unwrap_or(default_port);
        // Behind a proxy the Host header often has no port: any default port matches, over
        // either scheme (a TLS proxy). With a port, the request came straight to this server,
        // which speaks plain HTTP: an https origin on that port is not its own page.
        o_name == h_name
            && match h_port {
                Some(p) => p == o_port && scheme == "http",
                None => o_port == 80 || o_port == 443,
            }
    }

    /// The token the request carries (Authorization header, cookie or
    /// `token` query parameter), and whether it came from the query.
    fn presented<'a>(
        &self,
        headers: &'a HeaderMap,
        query: Option<&'a str>,
    ) -> Vec<(&'a str, bool)> {
        let mut found = Vec::new();
        for v in headers.get_all(header::AUTHORIZATION) {
            if let Some(t) = v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
                found.push((t.trim(), false));
            }
        }
        let cookie = self.cookie_name();
        for v in headers.get_all(header::COOKIE) {
            for c in v.to_str().unwrap_or("").split(';') {
                if let Some((k, t)) = c.trim().split_once('=') {
                    if k == cookie {
                        found.push((t, false));
                    }
                }
            }
        }
        for pair in query.unwrap_or("").split('&') {
            if let Some(t) = pair.strip_prefix("token=") {
                found.push((t, true));
            }
        }
        found
    }
}

fn token_matches(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

fn forbidden(code: &'static str, message: String) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, code, message).into_response()
}

/// The middleware: Host, then token, then Origin.
pub async fn check(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    // Two Host or Origin headers: proxies and this check could each read a different one.
    for name in [header::HOST, header::ORIGIN] {
        if req.headers().get_all(&name).iter().count() > 1 {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "duplicate_header",
                format!("the request has more than one {name} header; send one"),
            )
            .into_response();
        }
    }
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_string)
        })
        .unwrap_or_default();
    if !access.host_allowed(&host) {
        return forbidden(
            "host_not_allowed",
            format!(
                "Host {host:?} is not accepted (protection against DNS rebinding): use an IP address or localhost, or start the server with --allow-host NAME"
            ),
        );
    }
    let mut set_cookie = None;
    if let Some(expected) = &access.token {
        let presented = access.presented(req.headers(), req.uri().query());
        match presented.iter().find(|(t, _)| token_matches(expected, t)) {
            Some((_, from_query)) => {
                if *from_query && req.method() == Method::GET {
                    set_cookie = Some(format!(
                        "{}={expected}; Path=/; HttpOnly; SameSite=Strict",
                        access.cookie_name()
                    ));
                }
            }
            None => {
                let mut r = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this server needs its access token: open the URL it printed at start (…/?token=…), or send `Authorization: Bearer TOKEN`",
                )
                .into_response();
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
        }
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let origin = req.headers().get(header::ORIGIN).map(|v| v.to_str().unwrap_or("?"));
        let cross_site = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "cross-site");
        let refused = match origin {
            Some(o) => !access.origin_allowed(o, &host),
            None => cross_site,
        };
        if refused {
            return forbidden(
                "origin_not_allowed",
                format!(
                    "requests from origin {} may not change anything here: only the server's own pages (or origins given with --allow-origin) may",
                    origin.unwrap_or("(cross-site)")
                ),
            );
        }
    }
    let mut r = next.run(req).await;
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_cannot_be_rebound_and_allowed_names() {
        let a = Access { allow_hosts: vec!["box.lan".into()], ..Default::default() };
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "[::1]:8080",
            "[::1]",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost:1",
            "192.168.1.7:80",
            "box.lan:8080",
            "box.lan.",
        ] {
            assert!(a.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "localhost.evil.example",
            "",
            "[::1",
            "a:b:c",
            "127.0.0.1.nip.io",
        ] {
            assert!(!a.host_allowed(bad), "{bad:?}");
        }
        let any = Access { allow_hosts: vec!["*".into()], ..Default::default() };
        assert!(any.host_allowed("anything.example"));
    }

    #[test]
    fn only_the_servers_own_origin_or_allowed_ones() {
        let a = Access { allow_origins: vec!["https://app.example".into()], ..Default::default() };
        assert!(a.origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(a.origin_allowed("http://localhost:8080", "LocalHost:8080"));
        assert!(a.origin_allowed("https://cbr.example", "cbr.example"));
        assert!(a.origin_allowed("https://app.example/", "127.0.0.1:8080"));
        assert!(!a.origin_allowed("http://evil.example", "127.0.0.1:8080"));
        assert!(!a.origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8080"));
        assert!(!a.origin_allowed("null", "127.0.0.1:8080"));
        assert!(!a.origin_allowed("file://", "127.0.0.1:8080"));
        // This server speaks plain HTTP: https on its own port is another origin.
        assert!(!a.origin_allowed("https://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!a.origin_allowed("https://localhost:443", "localhost:443"));
        assert!(a.origin_allowed("http://localhost:443", "localhost:443"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abc", "abd"));
        assert!(!token_matches("abc", "ab"));
        assert!(!token_matches("abc", ""));
        let t = random_token().unwrap();
        assert_eq!(t.len(), 64);
        assert_ne!(t, random_token().unwrap());
    }
}
