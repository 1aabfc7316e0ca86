//! weftDNS's HTTP routes, Weave Net's (`nameserver/http.go`): `/domain`, `/dns-address`,
//! `/dns-address-port`, and `/name…` to register, remove and list entries. Present only when
//! DNS is on; without it these paths answer 404, as Weave Net's do.

use std::net::Ipv4Addr;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tokio::sync::oneshot;

use super::task::{DnsStatus, Handle, Request};
use crate::error::RequestError;
use crate::http::{form_pairs, form_value, text};

/// The DNS routes, for the control listener.
pub fn routes(dns: Handle) -> Router {
    Router::new()
        .route("/domain", get(domain))
        .route("/dns-address", get(address))
        .route("/dns-address-port", get(address_port))
        .route("/name", get(entries).delete(delete_all))
        .route("/name/:container", axum::routing::delete(delete_container))
        .route(
            "/name/:container/:ip",
            axum::routing::put(add).delete(delete_one),
        )
        .with_state(dns)
}

impl Handle {
    /// DNS's state for the status views.
    pub(crate) async fn status(&self) -> Result<DnsStatus, RequestError> {
        self.ask(Request::Status).await
    }

    /// The containers with live names in the zone (ours and other peers').
    pub(crate) async fn containers(&self) -> Result<Vec<String>, RequestError> {
        let all = self.ask(Request::Entries).await?;
        Ok(all
            .into_iter()
            .filter(|e| e.tombstone == 0)
            .map(|e| e.container_id)
            .collect())
    }

    /// Tells the DNS task a Docker container died.
    pub(crate) async fn container_died(&self, id: String) {
        let _ = self.requests.send(Request::ContainerDied(id)).await;
    }

    /// Removes every name of `container`'s address `addr`.
    pub(crate) async fn remove(
        &self,
        container: String,
        addr: Ipv4Addr,
    ) -> Result<(), RequestError> {
        self.ask(|reply| Request::Delete {
            container: Some(container),
            addr: Some(addr),
            fqdn: None,
            reply,
        })
        .await
    }

    /// Registers `fqdn` for `container`'s address `addr`.
    pub(crate) async fn add(
        &self,
        container: String,
        addr: Ipv4Addr,
        fqdn: String,
        check_alive: bool,
    ) -> Result<(), RequestError> {
        self.ask(|reply| Request::Add {
            container,
            addr,
            fqdn,
            check_alive,
            reply,
        })
        .await
    }

    async fn ask<T>(
        &self,
        req: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, RequestError> {
        crate::http::ask(&self.requests, req).await
    }
}

async fn domain(State(dns): State<Handle>) -> Response {
    text(StatusCode::OK, dns.domain.clone())
}

async fn address(State(dns): State<Handle>) -> Response {
    text(StatusCode::OK, dns.listen.ip().to_string())
}

async fn address_port(State(dns): State<Handle>) -> Response {
    text(StatusCode::OK, dns.listen.to_string())
}

/// A non-empty query or form value.
fn value(q: &[(String, String)], form: &[(String, String)], name: &str) -> Option<String> {
    form_value(q, form, name)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn parse_ip(ip: &str) -> Result<Ipv4Addr, RequestError> {
    ip.parse()
        .map_err(|_| RequestError::BadIp(weft_wire::bounded(ip)))
}

async fn add(
    State(dns): State<Handle>,
    Path((container, ip)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    body: String,
) -> Result<Response, RequestError> {
    let addr = parse_ip(&ip)?;
    let form = form_pairs(&body);
    let Some(fqdn) = value(&q, &form, "fqdn") else {
        // Weave registers the empty name, which is never in the domain: nothing happens.
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let check_alive = form_value(&q, &form, "check-alive") == Some("true");
    dns.add(container, addr, fqdn, check_alive).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete(
    dns: &Handle,
    container: Option<String>,
    ip: Option<String>,
    q: &[(String, String)],
) -> Result<Response, RequestError> {
    let addr = ip.as_deref().map(parse_ip).transpose()?;
    let fqdn = value(q, &[], "fqdn");
    dns.ask(|reply| Request::Delete {
        container,
        addr,
        fqdn,
        reply,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_one(
    State(dns): State<Handle>,
    Path((container, ip)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, RequestError> {
    delete(&dns, Some(container), Some(ip), &q).await
}

async fn delete_container(
    State(dns): State<Handle>,
    Path(container): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, RequestError> {
    delete(&dns, Some(container), None, &q).await
}

async fn delete_all(
    State(dns): State<Handle>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, RequestError> {
    delete(&dns, None, None, &q).await
}

/// `GET /name` with `Accept: application/json`: every entry, tombstones included, as Go's
/// `json.Marshal` of Weave's entries (the address dotted, the origin a number).
async fn entries(State(dns): State<Handle>, headers: HeaderMap) -> Result<Response, RequestError> {
    let json_asked = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if !json_asked {
        return Ok(text(StatusCode::NOT_FOUND, "404 page not found\n".into()));
    }
    let all = dns.ask(Request::Entries).await?;
    let doc: Vec<_> = all
        .iter()
        .map(|e| {
            json!({
                "ContainerID": e.container_id,
                "Origin": e.origin.0,
                "Addr": e.addr.to_string(),
                "Hostname": e.hostname,
                "Version": e.version,
                "Tombstone": e.tombstone,
            })
        })
        .collect();
    let body = serde_json::to_string(&doc).unwrap_or_else(|_| "[]".into());
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

impl DnsStatus {
    /// The `Service: dns` section of `weft status`.
    pub fn render_section(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from("\n");
        for (label, value) in [
            ("Service", "dns".to_string()),
            ("Domain", self.domain.clone()),
            ("Upstream", self.upstream.clone()),
            ("TTL", self.ttl.to_string()),
            ("Entries", self.live.len().to_string()),
        ] {
            let _ = writeln!(out, "{label:>15}: {value}");
        }
        out
    }

    /// `weft status dns`: one row per live entry, Weave's
    /// `%-12v %-15v %12.12v %v` of the name without the domain, the address, the container
    /// ID cut or padded to 12, and the origin.
    pub fn render_entries(&self) -> String {
        use std::fmt::Write as _;
        let suffix = format!(".{}", self.domain);
        let mut out = String::new();
        for e in &self.live {
            let name = e.hostname.strip_suffix(&suffix).unwrap_or(&e.hostname);
            let id: String = e.container_id.chars().take(12).collect();
            let _ = writeln!(
                out,
                "{name:<12} {:<15} {id:>12} {}",
                e.addr.to_string(),
                e.origin
            );
        }
        out
    }

    /// The `DNS` object of `weft report`.
    pub fn report(&self) -> serde_json::Value {
        json!({
            "Domain": self.domain,
            "Upstream": self.upstream.split(", ").filter(|s| *s != "none").collect::<Vec<_>>(),
            "Address": self.address.map(|a| a.to_string()).unwrap_or_default(),
            "TTL": self.ttl,
            "Entries": self.live.iter().map(|e| json!({
                "Hostname": e.hostname,
                "Origin": e.origin.to_string(),
                "ContainerID": e.container_id,
                "Address": e.addr.to_string(),
                "Version": e.version,
                "Tombstone": e.tombstone,
            })).collect::<Vec<_>>(),
        })
    }
}
