//! A plain HTTP/1.1 client over loopback for tests of the HTTP endpoints (`/metrics`, the
//! console's API): one request per connection with `Connection: close`, no dependency on an
//! HTTP library, so the server is checked against bytes a test controls.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One `GET path`; returns the whole answer (status line, headers, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    http_request(addr, "GET", path, None).await
}

/// One request with an optional JSON body; returns the whole answer (status line, headers,
/// body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the HTTP endpoint");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = json_body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).await.expect("send the request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read the answer");
    out
}

/// The status code and body of a whole answer from [`http_request`].
pub fn status_and_body(answer: &str) -> (u16, &str) {
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    (status, body)
}

/// A request whose answer must parse as JSON; returns the status and the document.
pub async fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> (u16, serde_json::Value) {
    let answer = http_request(addr, method, path, json_body).await;
    let (status, body) = status_and_body(&answer);
    let doc = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{method} {path}: answer is not JSON ({e}): {answer}"));
    (status, doc)
}
