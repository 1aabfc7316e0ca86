//! The router's HTTP API (control, default 127.0.0.1:6784) and status listener (default
//! 127.0.0.1:6782): Weave Net's routes, status bodies and error conventions.
//!
//! Handlers return [`RequestError`] and this file maps it to a status code and body in one
//! place, its `IntoResponse` impl; the texts and codes are Weave Net's.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::sync::{mpsc, oneshot};
use weft_types::Ipv4Cidr;

use crate::dataplane_task::Job;
use crate::dns::task::DnsStatus;
use crate::docker_parts::{PartError, Parts};
use crate::driver::{Command, Snapshot};
use crate::error::RequestError;
use crate::ipam::{self, status::IpamStatus};
use crate::metrics;
use crate::plugin::PluginConfig;
use crate::proxy::{ProxyConfig, ProxyFlags};
use crate::status::{self, RouterInfo};
use crate::template;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct Api {
    /// Channel to the mesh task.
    pub commands: mpsc::Sender<Command>,
    /// Static router facts.
    pub info: Arc<RouterInfo>,
    /// The IPAM task, when IPAM is on.
    pub ipam: Option<ipam::task::Handle>,
    /// The DNS task, when DNS is on.
    pub dns: Option<crate::dns::task::Handle>,
    /// The plugin and the proxy.
    pub parts: Parts,
    /// What calls that start or stop them must show (see [`crate::run_dir::TOKEN_FILE`]).
    pub token: Arc<String>,
    /// Where the plugin's sockets go when `POST /plugin` starts it.
    pub plugin: PluginConfig,
}

impl Api {
    /// Sends the mesh task the command `cmd` builds around a reply channel, and waits for the
    /// answer.
    async fn ask<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RequestError> {
        ask(&self.commands, cmd).await
    }

    async fn status(&self) -> Result<Snapshot, RequestError> {
        self.ask(Command::Status).await
    }

    /// IPAM's state, when IPAM is on.
    async fn dns_status(&self) -> Result<Option<DnsStatus>, RequestError> {
        match &self.dns {
            Some(h) => Ok(Some(h.status().await?)),
            None => Ok(None),
        }
    }

    async fn ipam_status(&self) -> Result<Option<IpamStatus>, RequestError> {
        match &self.ipam {
            Some(h) => Ok(Some(h.status().await?)),
            None => Ok(None),
        }
    }
}

/// Sends a task the request `req` builds around a reply channel, and waits for the answer; a
/// task that has gone means the router is shutting down.
pub(crate) async fn ask<R, T>(
    to: &mpsc::Sender<R>,
    req: impl FnOnce(oneshot::Sender<T>) -> R,
) -> Result<T, RequestError> {
    let (tx, rx) = oneshot::channel();
    to.send(req(tx))
        .await
        .map_err(|_| RequestError::ShuttingDown)?;
    rx.await.map_err(|_| RequestError::ShuttingDown)
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let code = match &self {
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::UnknownView(_) => StatusCode::NOT_FOUND,
            Self::FormatCount
            | Self::Template(_)
            | Self::BadPeers(_)
            | Self::BadAddress(_)
            | Self::Subnet(_)
            | Self::BadIp(_)
            | Self::Ipam(_)
            | Self::Claim(_)
            | Self::Free(_) => StatusCode::BAD_REQUEST,
            Self::Expose(_) | Self::Hide(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unauthorised => StatusCode::FORBIDDEN,
            Self::Part(e) => match e {
                PartError::Running(_) => StatusCode::CONFLICT,
                PartError::NotRunning(_) => StatusCode::NOT_FOUND,
                PartError::NoDocker | PartError::Config(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        };
        text(code, format!("{self}\n"))
    }
}

pub(crate) fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
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
    let router = Router::new()
        .route("/connect", post(post_connect))
        .route("/forget", post(post_forget))
        .route("/expose", get(get_exposed))
        .route("/expose/:ip/:len", post(post_expose).delete(delete_expose))
        .route("/proxyaddrs", get(get_proxy_addrs))
        .route("/proxy", post(post_proxy).delete(delete_proxy))
        .route("/plugin", post(post_plugin).delete(delete_plugin));
    // The IPAM routes, `/peer` among them, exist only with IPAM, as Weave Net's do; leaving
    // the cluster without IPAM hands nothing over.
    let router = match api.ipam.clone() {
        Some(h) => router.with_state(api.clone()).merge(ipam::http::routes(h)),
        None => router
            .route("/peer", delete(delete_peer))
            .with_state(api.clone()),
    };
    let router = match api.dns.clone() {
        Some(h) => router.merge(crate::dns::http::routes(h)),
        None => router,
    };
    status_routes(api).merge(router)
}

/// The proxy's addresses, one a line (`weft env`, `weft config`); empty when it is off.
async fn get_proxy_addrs(State(api): State<Api>) -> Response {
    text(StatusCode::OK, api.parts.proxy_addrs().join("\n"))
}

/// The header that carries the control token.
pub const TOKEN_HEADER: &str = "x-weft-token";

impl Api {
    /// Whether the request shows the control token: anyone on the host reaches this API, but
    /// only the router's own user may make it listen somewhere new or talk to another daemon.
    fn authorised(&self, headers: &HeaderMap) -> Result<(), RequestError> {
        let shown = headers
            .get(TOKEN_HEADER)
            .map(axum::http::HeaderValue::as_bytes)
            .unwrap_or_default();
        let want = self.token.as_bytes();
        // Compared in full whatever differs, so the time taken says nothing of the token.
        let same = shown.len() == want.len()
            && shown
                .iter()
                .zip(want)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err(RequestError::Unauthorised)
        }
    }
}

/// `weft launch-proxy`: starts the proxy with the flags in the body (JSON [`ProxyFlags`]);
/// answers its addresses, one a line.
async fn post_proxy(
    State(api): State<Api>,
    headers: HeaderMap,
    axum::Json(flags): axum::Json<ProxyFlags>,
) -> Result<Response, RequestError> {
    api.authorised(&headers)?;
    let cfg = ProxyConfig::from_flags(&flags).map_err(PartError::Config)?;
    api.parts.start_proxy(cfg).await?;
    Ok(text(StatusCode::OK, api.parts.proxy_addrs().join("\n")))
}

/// `weft stop-proxy`.
async fn delete_proxy(
    State(api): State<Api>,
    headers: HeaderMap,
) -> Result<Response, RequestError> {
    api.authorised(&headers)?;
    api.parts.stop_proxy().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What `weft launch-plugin` may ask for.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PluginFlags {
    /// `--no-multicast-route`: the network `weave` gets no multicast route.
    no_multicast_route: bool,
}

/// `weft launch-plugin`: starts the plugin (JSON [`PluginFlags`] in the body).
async fn post_plugin(
    State(api): State<Api>,
    headers: HeaderMap,
    axum::Json(flags): axum::Json<PluginFlags>,
) -> Result<Response, RequestError> {
    api.authorised(&headers)?;
    let cfg = PluginConfig {
        multicast: !flags.no_multicast_route,
        ..api.plugin.clone()
    };
    api.parts.start_plugin(cfg).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `weft stop-plugin` (and `weft stop`, first): answers the warning to print, if any.
async fn delete_plugin(
    State(api): State<Api>,
    headers: HeaderMap,
) -> Result<Response, RequestError> {
    api.authorised(&headers)?;
    match api.parts.stop_plugin().await? {
        Some(warning) => Ok(text(StatusCode::OK, format!("{warning}\n"))),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn get_status(State(api): State<Api>) -> Result<Response, RequestError> {
    let s = api.status().await?;
    let mut body = status::render_status(&s.mesh, &api.info);
    if let Some(i) = api.ipam_status().await? {
        body.push_str(&i.render_section());
    }
    if let Some(d) = api.dns_status().await? {
        body.push_str(&d.render_section());
    }
    body.push_str(&api.parts.render_sections());
    Ok(text(StatusCode::OK, body))
}

async fn get_status_view(
    State(api): State<Api>,
    Path(view): Path<String>,
) -> Result<Response, RequestError> {
    let snap = api.status().await?;
    let s = &snap.mesh;
    let body = match view.as_str() {
        "targets" => status::render_targets(s),
        "connections" => status::render_connections(s),
        "peers" => status::render_peers(s),
        "ipam" => match api.ipam_status().await? {
            Some(i) => i.render_owners(),
            None => return Err(RequestError::UnknownView(view)),
        },
        "dns" => match api.dns_status().await? {
            Some(d) => d.render_entries(),
            None => return Err(RequestError::UnknownView(view)),
        },
        _ => return Err(RequestError::UnknownView(view)),
    };
    Ok(text(StatusCode::OK, body))
}

async fn get_report(
    State(api): State<Api>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, RequestError> {
    let s = api.status().await?;
    let mut doc = status::report(&s.mesh, &api.info, true);
    if let (Some(i), Some(obj)) = (api.ipam_status().await?, doc.as_object_mut()) {
        obj.insert("IPAM".into(), i.report());
    }
    if let (Some(d), Some(obj)) = (api.dns_status().await?, doc.as_object_mut()) {
        obj.insert("DNS".into(), d.report());
    }
    if let Some(obj) = doc.as_object_mut() {
        for (k, v) in api.parts.report() {
            obj.insert(k.into(), v);
        }
    }
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
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body + "\n",
        )
            .into_response());
    }
    let [format] = formats.as_slice() else {
        return Err(RequestError::FormatCount);
    };
    Ok(text(StatusCode::OK, template::render(format, &doc)?))
}

async fn get_metrics(State(api): State<Api>) -> Result<Response, RequestError> {
    let s = api.status().await?;
    let ipam = api.ipam_status().await?;
    let dns = api.dns_status().await?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::render(&s, ipam.as_ref(), dns.as_ref()),
    )
        .into_response())
}

/// Form values of `POST /connect` and `/forget`: `peer` repeats, so take all pairs.
fn peers_of(form: &[(String, String)]) -> Vec<String> {
    form.iter()
        .filter(|(k, _)| k == "peer")
        .map(|(_, v)| v.clone())
        .collect()
}

async fn post_connect(State(api): State<Api>, body: String) -> Result<Response, RequestError> {
    let form: Vec<(String, String)> = form_pairs(&body);
    let replace = form.iter().any(|(k, v)| k == "replace" && v == "true");
    let errs = api
        .ask(|reply| Command::Connect {
            peers: peers_of(&form),
            replace,
            reply,
        })
        .await?;
    if !errs.is_empty() {
        return Err(RequestError::BadPeers(errs));
    }
    Ok(text(StatusCode::OK, String::new()))
}

async fn post_forget(State(api): State<Api>, body: String) -> Result<Response, RequestError> {
    let form = form_pairs(&body);
    api.ask(|reply| Command::Forget(peers_of(&form), reply))
        .await?;
    Ok(text(StatusCode::OK, String::new()))
}

/// `{ip}/{len}` from the path.
fn parse_cidr(ip: &str, len: &str) -> Result<Ipv4Cidr, RequestError> {
    weft_attach::parse_cidr(&format!("{ip}/{len}")).map_err(RequestError::BadAddress)
}

async fn post_expose(
    State(api): State<Api>,
    Path((ip, len)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    body: String,
) -> Result<Response, RequestError> {
    let cidr = parse_cidr(&ip, &len)?;
    let skip_nat = q
        .iter()
        .chain(form_pairs(&body).iter())
        .any(|(k, v)| k == "skipNAT" && v == "true");
    api.ask(|reply| {
        Command::Dataplane(Job::Expose {
            cidr,
            skip_nat,
            reply,
        })
    })
    .await?
    .map_err(RequestError::Expose)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_expose(
    State(api): State<Api>,
    Path((ip, len)): Path<(String, String)>,
) -> Result<Response, RequestError> {
    let cidr = parse_cidr(&ip, &len)?;
    api.ask(|reply| Command::Dataplane(Job::Hide(cidr, reply)))
        .await?
        .map_err(RequestError::Hide)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_exposed(State(api): State<Api>) -> Result<Response, RequestError> {
    let v = api
        .ask(|reply| Command::Dataplane(Job::Exposed(reply)))
        .await?;
    Ok(text(
        StatusCode::OK,
        v.iter().map(|c| format!("{c}\n")).collect(),
    ))
}

async fn delete_peer() -> Response {
    // Leaving the cluster hands over IPAM ranges; without IPAM there is nothing to hand over.
    StatusCode::NO_CONTENT.into_response()
}

/// Parses `application/x-www-form-urlencoded`, keeping repeated keys.
/// The first value of `name` among the query's pairs, then the form's (Go's `FormValue`).
pub(crate) fn form_value<'a>(
    query: &'a [(String, String)],
    form: &'a [(String, String)],
    name: &str,
) -> Option<&'a str> {
    query
        .iter()
        .chain(form)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

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
    use weft_core::connection_maker::PeerError;

    use super::*;
    use crate::dataplane::DataplaneError;

    #[test]
    fn form_keeps_repeats() {
        let f = form_pairs("peer=10.0.0.1&peer=h2%3A6783&replace=true");
        assert_eq!(peers_of(&f), vec!["10.0.0.1", "h2:6783"]);
        assert!(f.contains(&("replace".into(), "true".into())));
        assert!(form_pairs("").is_empty());
        assert_eq!(form_pairs("peer=%zz")[0].1, "%zz");
    }

    async fn answer(e: RequestError) -> (u16, String, String) {
        let r = e.into_response();
        let code = r.status().as_u16();
        let ctype = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (code, ctype, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Weave Net's codes and texts, as `weft` prints them and scripts match them.
    #[tokio::test]
    async fn errors_map_to_weaves_codes_and_texts() {
        let bad_addr = parse_cidr("10.2.1.300", "24").unwrap_err();
        let tpl = template::render("{{.Nope", &serde_json::json!({})).unwrap_err();
        let tpl_text = format!("{tpl}\n");
        let cases = [
            (
                RequestError::ShuttingDown,
                503,
                "router is shutting down\n".to_owned(),
            ),
            (
                RequestError::UnknownView("bogus".into()),
                404,
                "404 page not found\n".to_owned(),
            ),
            (
                RequestError::FormatCount,
                400,
                "error: must supply one format parameter\n".to_owned(),
            ),
            (RequestError::Template(tpl), 400, tpl_text),
            (
                RequestError::BadPeers(vec![
                    PeerError::InvalidName("x:y:z".into()),
                    PeerError::InvalidName("a:b:c".into()),
                ]),
                400,
                "invalid peer name \"x:y:z\", should be host[:port]\n\
                 invalid peer name \"a:b:c\", should be host[:port]\n"
                    .to_owned(),
            ),
            (
                bad_addr,
                400,
                "unable to parse ip addr: invalid address \"10.2.1.300/24\": expected \
                 a.b.c.d/len (optionally prefixed by ip:)\n"
                    .to_owned(),
            ),
            (
                RequestError::Expose(DataplaneError::Missing("weave")),
                500,
                "unable to expose: device weave did not appear after creation\n".to_owned(),
            ),
            (
                RequestError::Hide(DataplaneError::Missing("weave")),
                500,
                "unable to hide: device weave did not appear after creation\n".to_owned(),
            ),
        ];
        for (e, code, body) in cases {
            assert_eq!(
                answer(e).await,
                (code, "text/plain; charset=utf-8".to_owned(), body)
            );
        }
        assert!(
            parse_cidr("ip:10.2.1.1", "24").is_ok(),
            "Weave's ip: prefix"
        );
        assert!(parse_cidr("10.2.1.1", "33").is_err());
    }
}
