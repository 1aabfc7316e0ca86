//! The router's HTTP API (control, default 127.0.0.1:6784) and status listener (default
//! 127.0.0.1:6782): Weave Net's routes, status bodies and error conventions.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::sync::{mpsc, oneshot};

use crate::attach::Cidr;
use crate::dataplane_task::Job;
use crate::driver::{Command, Snapshot};
use crate::metrics;
use crate::status::{self, RouterInfo};
use crate::template;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct Api {
    /// Channel to the mesh task.
    pub commands: mpsc::Sender<Command>,
    /// Static router facts.
    pub info: Arc<RouterInfo>,
}

impl Api {
    async fn status(&self) -> Option<Snapshot> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Status(tx)).await.ok()?;
        rx.await.ok()
    }
}

fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn unavailable() -> Response {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "router is shutting down\n".into(),
    )
}

/// Routes served on the status address: read-only views and metrics.
pub fn status_routes(api: Api) -> Router {
    Router::new()
        .route("/status", get(get_status))
        .route("/status/:view", get(get_status_view))
        .route("/report", get(get_report))
        .route("/metrics", get(get_metrics))
        .with_state(api)
}

/// Routes served on the control address: everything.
pub fn control_routes(api: Api) -> Router {
    status_routes(api.clone()).merge(
        Router::new()
            .route("/connect", post(post_connect))
            .route("/forget", post(post_forget))
            .route("/peer", delete(delete_peer))
            .route("/expose", get(get_exposed))
            .route("/expose/:ip/:len", post(post_expose).delete(delete_expose))
            .with_state(api),
    )
}

async fn get_status(State(api): State<Api>) -> Response {
    match api.status().await {
        Some(s) => text(StatusCode::OK, status::render_status(&s.mesh, &api.info)),
        None => unavailable(),
    }
}

async fn get_status_view(State(api): State<Api>, Path(view): Path<String>) -> Response {
    let Some(snap) = api.status().await else {
        return unavailable();
    };
    let s = &snap.mesh;
    let body = match view.as_str() {
        "targets" => status::render_targets(s),
        "connections" => status::render_connections(s),
        "peers" => status::render_peers(s),
        _ => return text(StatusCode::NOT_FOUND, "404 page not found\n".into()),
    };
    text(StatusCode::OK, body)
}

async fn get_report(
    State(api): State<Api>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let Some(s) = api.status().await else {
        return unavailable();
    };
    let doc = status::report(&s.mesh, &api.info, true);
    let formats: Vec<&String> = q
        .iter()
        .filter(|(k, _)| k == "format")
        .map(|(_, v)| v)
        .collect();
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if formats.is_empty() && wants_json {
        let body = serde_json::to_string_pretty(&doc).unwrap_or_default();
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body + "\n",
        )
            .into_response();
    }
    if formats.len() != 1 {
        return text(
            StatusCode::BAD_REQUEST,
            "error: must supply one format parameter\n".into(),
        );
    }
    match template::render(formats[0], &doc) {
        Ok(out) => text(StatusCode::OK, out),
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

async fn get_metrics(State(api): State<Api>) -> Response {
    match api.status().await {
        Some(s) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            metrics::render(&s, api.info.encryption),
        )
            .into_response(),
        None => unavailable(),
    }
}

/// Form values of `POST /connect` and `/forget`: `peer` repeats, so take all pairs.
fn peers_of(form: &[(String, String)]) -> Vec<String> {
    form.iter()
        .filter(|(k, _)| k == "peer")
        .map(|(_, v)| v.clone())
        .collect()
}

async fn post_connect(State(api): State<Api>, body: String) -> Response {
    let form: Vec<(String, String)> = form_pairs(&body);
    let replace = form.iter().any(|(k, v)| k == "replace" && v == "true");
    let (tx, rx) = oneshot::channel();
    let cmd = Command::Connect {
        peers: peers_of(&form),
        replace,
        reply: tx,
    };
    if api.commands.send(cmd).await.is_err() {
        return unavailable();
    }
    match rx.await {
        Ok(errs) if errs.is_empty() => text(StatusCode::OK, String::new()),
        Ok(errs) => text(StatusCode::BAD_REQUEST, errs.join("\n") + "\n"),
        Err(_) => unavailable(),
    }
}

async fn post_forget(State(api): State<Api>, body: String) -> Response {
    let form = form_pairs(&body);
    let (tx, rx) = oneshot::channel();
    if api
        .commands
        .send(Command::Forget(peers_of(&form), tx))
        .await
        .is_err()
    {
        return unavailable();
    }
    let _ = rx.await;
    text(StatusCode::OK, String::new())
}

/// `{ip}/{len}` from the path, or the 400 response Weave Net gives.
fn parse_cidr(ip: &str, len: &str) -> Result<Cidr, String> {
    format!("{ip}/{len}")
        .parse::<Cidr>()
        .map_err(|e| format!("unable to parse ip addr: {e}\n"))
}

async fn post_expose(
    State(api): State<Api>,
    Path((ip, len)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    body: String,
) -> Response {
    let cidr = match parse_cidr(&ip, &len) {
        Ok(c) => c,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let skip_nat = q
        .iter()
        .chain(form_pairs(&body).iter())
        .any(|(k, v)| k == "skipNAT" && v == "true");
    let (tx, rx) = oneshot::channel();
    let cmd = Command::Dataplane(Job::Expose {
        cidr,
        skip_nat,
        reply: tx,
    });
    if api.commands.send(cmd).await.is_err() {
        return unavailable();
    }
    match rx.await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unable to expose: {e}\n"),
        ),
        Err(_) => unavailable(),
    }
}

async fn delete_expose(
    State(api): State<Api>,
    Path((ip, len)): Path<(String, String)>,
) -> Response {
    let cidr = match parse_cidr(&ip, &len) {
        Ok(c) => c,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let (tx, rx) = oneshot::channel();
    if api
        .commands
        .send(Command::Dataplane(Job::Hide(cidr, tx)))
        .await
        .is_err()
    {
        return unavailable();
    }
    match rx.await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unable to hide: {e}\n"),
        ),
        Err(_) => unavailable(),
    }
}

async fn get_exposed(State(api): State<Api>) -> Response {
    let (tx, rx) = oneshot::channel();
    if api
        .commands
        .send(Command::Dataplane(Job::Exposed(tx)))
        .await
        .is_err()
    {
        return unavailable();
    }
    match rx.await {
        Ok(v) => text(StatusCode::OK, v.iter().map(|c| format!("{c}\n")).collect()),
        Err(_) => unavailable(),
    }
}

async fn delete_peer() -> Response {
    // Leaving the cluster hands over IPAM ranges; without IPAM there is nothing to hand over.
    StatusCode::NO_CONTENT.into_response()
}

/// Parses `application/x-www-form-urlencoded`, keeping repeated keys.
pub(crate) fn form_pairs(body: &str) -> Vec<(String, String)> {
    let decode = |s: &str| -> String {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                if let Some(v) = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_keeps_repeats() {
        let f = form_pairs("peer=10.0.0.1&peer=h2%3A6783&replace=true");
        assert_eq!(peers_of(&f), vec!["10.0.0.1", "h2:6783"]);
        assert!(f.contains(&("replace".into(), "true".into())));
        assert!(form_pairs("").is_empty());
        assert_eq!(form_pairs("peer=%zz")[0].1, "%zz");
    }
}
