//! Which Docker API calls the proxy intercepts, and which may hijack their connection, told
//! from method and path (an optional `/v<version>` prefix allowed, as Weave Net's path regexes
//! allow it).

use hyper::Method;

/// An intercepted call, or `Other` (passed through unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `POST /containers/create`.
    Create,
    /// `POST /containers/{id}/start` or `/restart`: held until the attach finished.
    Start(String),
    /// `POST /containers/{id}/exec`.
    Exec(String),
    /// `GET /containers/{id}/json`.
    Inspect(String),
    /// Anything else.
    Other,
}

/// The path without its `/v1.41`-style version prefix.
fn unversioned(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let v = &rest[..end];
        if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return &rest[end..];
        }
    }
    path
}

/// Classifies a request.
pub fn classify(method: &Method, path: &str) -> Call {
    let p = unversioned(path);
    let Some(rest) = p.strip_prefix("/containers/") else {
        return Call::Other;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::POST, ["create"]) => Call::Create,
        (&Method::POST, [id, "start" | "restart"]) if !id.is_empty() => {
            Call::Start((*id).to_string())
        }
        (&Method::POST, [id, "exec"]) if !id.is_empty() => Call::Exec((*id).to_string()),
        (&Method::GET, [id, "json"]) if !id.is_empty() => Call::Inspect((*id).to_string()),
        _ => Call::Other,
    }
}

/// Whether the daemon may answer this call by hijacking the connection for a raw stream:
/// `POST /containers/{id}/attach` and `POST /exec/{id}/start`.
pub fn hijackable(method: &Method, path: &str) -> bool {
    if method != Method::POST {
        return false;
    }
    let parts: Vec<&str> = unversioned(path).split('/').collect();
    matches!(parts.as_slice(),
        ["", "containers", id, "attach"] | ["", "exec", id, "start"] if !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let post = Method::POST;
        assert_eq!(classify(&post, "/containers/create"), Call::Create);
        assert_eq!(classify(&post, "/v1.41/containers/create"), Call::Create);
        assert_eq!(classify(&post, "/v1/containers/create"), Call::Create);
        assert_eq!(classify(&Method::GET, "/containers/create"), Call::Other);
        assert_eq!(
            classify(&post, "/v1.41/containers/abc/start"),
            Call::Start("abc".into())
        );
        assert_eq!(
            classify(&post, "/containers/abc/restart"),
            Call::Start("abc".into())
        );
        assert_eq!(
            classify(&post, "/containers/abc/exec"),
            Call::Exec("abc".into())
        );
        assert_eq!(
            classify(&Method::GET, "/v1.24/containers/abc/json"),
            Call::Inspect("abc".into())
        );
        for (m, p) in [
            (&post, "/containers//start"),
            (&post, "/containers/abc/stop"),
            (&post, "/vx/containers/create"),
            (&post, "/v1.41/containers/abc/start/x"),
            (&Method::GET, "/containers/json"),
            (&Method::GET, "/_ping"),
            (&post, "/exec/abc/start"),
        ] {
            assert_eq!(classify(m, p), Call::Other, "{p}");
        }
    }

    #[test]
    fn hijacking_calls() {
        let post = Method::POST;
        for p in [
            "/containers/abc/attach",
            "/v1.23/containers/abc/attach",
            "/exec/abc/start",
            "/v1.18/exec/abc/start",
        ] {
            assert!(hijackable(&post, p), "{p}");
        }
        for (m, p) in [
            (&Method::GET, "/containers/abc/attach"),
            (&post, "/containers//attach"),
            (&post, "/containers/abc/start"),
            (&post, "/exec/abc/attach"),
            (&post, "/containers/abc/attach/ws"),
            (&post, "/exec/abc/resize"),
            (&post, "/x/containers/abc/attach"),
        ] {
            assert!(!hijackable(m, p), "{p}");
        }
    }
}
