//! The CLI's side of the router's HTTP API, with Weave Net's conventions: 2xx bodies go to
//! stdout, 404 means "that subsystem is off" (exit 4), any other status prints the body on
//! stderr (exit 1), and a router that does not answer is reported as not running.

use std::time::Duration;

/// The outcome of one API call, already mapped to what the CLI prints.
#[derive(Debug)]
pub(crate) enum Reply {
    /// 2xx with this body.
    Ok(String),
    /// 404.
    NotFound,
    /// Another status, with the body.
    Failed(String),
    /// Nothing listening, or the connection broke.
    Down,
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .build()
}

fn finish(r: Result<ureq::Response, ureq::Error>) -> Reply {
    match r {
        Ok(resp) => Reply::Ok(resp.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(404, _)) => Reply::NotFound,
        Err(ureq::Error::Status(_, resp)) => Reply::Failed(resp.into_string().unwrap_or_default()),
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

/// `DELETE`.
pub(crate) fn delete(addr: &str, path: &str) -> Reply {
    finish(agent().delete(&format!("http://{addr}{path}")).call())
}
