//! The CLI's side of the router's HTTP API, with Weave Net's conventions: 2xx bodies go to
//! stdout, 404 means "that subsystem is off" (exit 4), any other status prints the body on
//! stderr (exit 1), and a router that does not answer is reported as not running.
//!
//! Path segments built from user input (container identities, peer names) go through
//! [`segment`]; it is written here rather than taken from a crate because it is a dozen lines
//! and the only encoding the CLI needs.

use std::time::Duration;

/// The outcome of one API call, already mapped to what the CLI prints.
#[derive(Debug)]
pub(crate) enum Reply {
    /// 2xx with this body.
    Ok(String),
    /// 404.
    NotFound,
    /// Another status, with the body.
    Failed(u16, String),
    /// Nothing listening, or the connection broke.
    Down,
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .build()
}

/// Like curl in Weave's script: a connect timeout but no limit on the answer, for the calls
/// that block until the cluster can serve them (`GET /ring`, `POST /ip/...`).
fn patient_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(3))
        .build()
}

fn finish(r: Result<ureq::Response, ureq::Error>) -> Reply {
    match r {
        Ok(resp) => Reply::Ok(resp.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(404, _)) => Reply::NotFound,
        Err(ureq::Error::Status(status, resp)) => {
            Reply::Failed(status, resp.into_string().unwrap_or_default())
        }
        Err(ureq::Error::Transport(_)) => Reply::Down,
    }
}

/// `GET http://<addr><path>`, optionally asking for JSON.
pub(crate) fn get(addr: &str, path: &str, json: bool) -> Reply {
    let mut req = agent().get(&format!("http://{addr}{path}"));
    if json {
        req = req.set("Accept", "application/json");
    }
    finish(req.call())
}

/// `GET` with query parameters (properly encoded).
pub(crate) fn get_query(addr: &str, path: &str, query: &[(&str, &str)]) -> Reply {
    let mut req = agent().get(&format!("http://{addr}{path}"));
    for (k, v) in query {
        req = req.query(k, v);
    }
    finish(req.call())
}

/// `POST` a form with possibly repeated keys.
pub(crate) fn post_form(addr: &str, path: &str, form: &[(&str, &str)]) -> Reply {
    finish(
        agent()
            .post(&format!("http://{addr}{path}"))
            .send_form(form),
    )
}

/// `<method>` showing the router's control token, with a JSON body when there is one (the
/// calls that start and stop the proxy and the plugin).
pub(crate) fn with_token(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    json: Option<&str>,
) -> Reply {
    let req = agent()
        .request(method, &format!("http://{addr}{path}"))
        .set(weftd::http::TOKEN_HEADER, token);
    finish(match json {
        Some(body) => req
            .set("Content-Type", "application/json")
            .send_string(body),
        None => req.call(),
    })
}

/// `<method>` a form (`PUT /name/…`).
pub(crate) fn send_form(addr: &str, method: &str, path: &str, form: &[(&str, &str)]) -> Reply {
    finish(
        agent()
            .request(method, &format!("http://{addr}{path}"))
            .send_form(form),
    )
}

/// `DELETE`.
pub(crate) fn delete(addr: &str, path: &str) -> Reply {
    finish(agent().delete(&format!("http://{addr}{path}")).call())
}

/// `<method> http://<addr><path>?<query>` with no body and no limit on how long the answer
/// takes; for the IPAM and peer routes.
pub(crate) fn call(addr: &str, method: &str, path: &str, query: &[(&str, &str)]) -> Reply {
    let mut req = patient_agent().request(method, &format!("http://{addr}{path}"));
    for (k, v) in query {
        req = req.query(k, v);
    }
    finish(req.call())
}

/// `s` as one URL path segment: RFC 3986 unreserved characters and `:` as they are (so
/// `netns:c1` and `weave:expose` read as in Weave), every other byte percent-encoded.
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("netns:c1"), "netns:c1");
        assert_eq!(segment("weave:expose"), "weave:expose");
        assert_eq!(segment("netns:a b%?#é"), "netns:a%20b%25%3F%23%C3%A9");
    }
}
