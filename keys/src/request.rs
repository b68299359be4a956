//! Sending a signed request (`wba request`) and printing what came back.

use std::io::Read as _;
use std::time::Duration;

use anyhow::Context as _;

use crate::sign::Prepared;

/// What the server answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub http_version: String,
    pub status: u16,
    pub status_text: String,
    pub headers: Vec<(String, String)>,
    /// At most the requested number of bytes.
    pub body: Vec<u8>,
    /// Whether the body was longer than what was kept.
    pub truncated: bool,
}

/// Sends the prepared request; redirects are not followed (they are shown).
pub fn send(prepared: &Prepared, timeout: Duration, max_body: usize) -> anyhow::Result<Answer> {
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(timeout)
        .user_agent(concat!("wba/", env!("CARGO_PKG_VERSION")))
        .build();
    let mut req = agent.request_url(&prepared.method, &prepared.url);
    for (n, v) in prepared.send_headers() {
        req = req.set(&n, &v);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => {
            return Err(anyhow::Error::new(e))
                .with_context(|| format!("{} {} failed", prepared.method, prepared.url))
        }
    };
    let mut headers = Vec::new();
    for name in resp.headers_names() {
        for v in resp.all(&name) {
            headers.push((name.clone(), v.to_string()));
        }
    }
    let http_version = resp.http_version().to_string();
    let status = resp.status();
    let status_text = resp.status_text().to_string();
    let limit = u64::try_from(max_body)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut body = Vec::new();
    resp.into_reader()
        .take(limit)
        .read_to_end(&mut body)
        .context("reading the response body")?;
    let truncated = body.len() > max_body;
    body.truncate(max_body);
    Ok(Answer {
        http_version,
        status,
        status_text,
        headers,
        body,
        truncated,
    })
}

impl Answer {
    /// Status line, headers, a blank line and the (possibly truncated) body.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} {} {}\n",
            self.http_version, self.status, self.status_text
        );
        for (n, v) in &self.headers {
            out.push_str(&format!("{n}: {v}\n"));
        }
        if !self.body.is_empty() {
            out.push('\n');
            out.push_str(&String::from_utf8_lossy(&self.body));
            if !out.ends_with('\n') {
                out.push('\n');
            }
            if self.truncated {
                out.push_str(&format!(
                    "[body truncated after {} bytes; raise --max-body to see more]\n",
                    self.body.len()
                ));
            }
        }
        out
    }
}
