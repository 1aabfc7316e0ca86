//! IPAM's HTTP routes, Weave Net's (`ipam/http.go`): `/ip…`, `/ipinfo/…`, `/ring`, and
//! `/peer` (leave the cluster, or take over a peer's ranges). Present only when IPAM is on;
//! without it these paths answer 404, as Weave Net's do.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::sync::oneshot;
use weft_core::ipam::allocator::{AllocError, NO_CONTAINER_ID};
use weft_core::ipam::{parse_cidr, parse_subnet, Address, CidrBlock, Range};
use weft_types::Ipv4Cidr;

use super::task::{Handle, Request};
use crate::error::RequestError;
use crate::http::{form_pairs, form_value, text};

/// The IPAM routes, for the control listener.
pub fn routes(ipam: Handle) -> Router {
    Router::new()
        .route("/ip", get(get_owned))
        .route(
            "/ip/:id",
            post(allocate_default)
                .get(lookup_default)
                .delete(delete_all),
        )
        .route(
            "/ip/:id/:ip/:len",
            post(allocate_in).put(claim).get(lookup_in),
        )
        .route("/ip/:id/:ip", delete(free_one))
        .route("/ipinfo/defaultsubnet", get(default_subnet))
        .route("/ipinfo/tracker", get(tracker))
        .route("/ring", get(prime))
        .route("/peer", delete(leave))
        .route("/peer/:name", delete(takeover))
        .with_state(ipam)
}

impl Handle {
    /// IPAM's state for the status views.
    pub(crate) async fn status(&self) -> Result<super::status::IpamStatus, RequestError> {
        self.ask(Request::Status).await
    }

    /// The idents that own addresses.
    pub(crate) async fn owners(&self) -> Result<Vec<String>, RequestError> {
        let owned = self.ask(Request::Owned).await?;
        Ok(owned.into_iter().map(|(id, _)| id).collect())
    }

    /// Hands a Docker container event to the IPAM task.
    pub(crate) async fn container_event(&self, event: weft_docker::Event) {
        let _ = self.requests.send(Request::Container(event)).await;
    }

    /// Allocates an address in `subnet` for `ident` (`_`: filed under the address's text).
    pub(crate) async fn allocate(
        &self,
        ident: String,
        subnet: Ipv4Cidr,
        check_alive: bool,
    ) -> Result<Result<Ipv4Cidr, AllocError>, RequestError> {
        self.ask(|reply| Request::Allocate {
            ident,
            subnet,
            check_alive,
            reply,
        })
        .await
    }

    /// Claims `cidr`'s address for `ident`.
    pub(crate) async fn claim(
        &self,
        ident: String,
        cidr: Ipv4Cidr,
        check_alive: bool,
        no_error_on_unknown: bool,
    ) -> Result<Result<(), AllocError>, RequestError> {
        self.ask(|reply| Request::Claim {
            ident,
            cidr,
            check_alive,
            no_error_on_unknown,
            reply,
        })
        .await
    }

    /// Releases every address of `ident`.
    pub(crate) async fn delete(
        &self,
        ident: String,
    ) -> Result<Result<(), AllocError>, RequestError> {
        self.ask(|reply| Request::Delete { ident, reply }).await
    }

    async fn ask<T>(
        &self,
        req: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, RequestError> {
        crate::http::ask(&self.requests, req).await
    }
}

/// Query and form values (`check-alive`, `noErrorOnUnknown`), as Go's `FormValue` reads both.
fn flag(q: &[(String, String)], body: &str, name: &str) -> bool {
    form_value(q, &form_pairs(body), name) == Some("true")
}

fn subnet(ip: &str, len: &str) -> Result<Ipv4Cidr, RequestError> {
    Ok(parse_subnet(&format!("{ip}/{len}"))?)
}

fn alloc_err(e: AllocError) -> RequestError {
    RequestError::Ipam(e)
}

/// An allocation's answer: the address, or Weave's 200 `cancelled`.
fn allocated(r: Result<Ipv4Cidr, AllocError>) -> Result<Response, RequestError> {
    match r {
        Ok(c) => Ok(text(StatusCode::OK, c.to_string())),
        Err(AllocError::Cancelled { .. }) => Ok(text(StatusCode::OK, "cancelled".into())),
        Err(e) => Err(alloc_err(e)),
    }
}

async fn allocate(
    ipam: &Handle,
    ident: String,
    subnet: Ipv4Cidr,
    check_alive: bool,
) -> Result<Response, RequestError> {
    allocated(ipam.allocate(ident, subnet, check_alive).await?)
}

async fn allocate_default(
    State(ipam): State<Handle>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    body: String,
) -> Result<Response, RequestError> {
    let check = flag(&q, &body, "check-alive");
    let subnet = ipam.default_subnet;
    allocate(&ipam, id, subnet, check).await
}

async fn allocate_in(
    State(ipam): State<Handle>,
    Path((id, ip, len)): Path<(String, String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    body: String,
) -> Result<Response, RequestError> {
    let subnet = subnet(&ip, &len)?;
    let check = flag(&q, &body, "check-alive");
    allocate(&ipam, id, subnet, check).await
}

async fn claim(
    State(ipam): State<Handle>,
    Path((ident, ip, len)): Path<(String, String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    body: String,
) -> Result<Response, RequestError> {
    let cidr = parse_cidr(&format!("{ip}/{len}"))?;
    let check_alive = flag(&q, &body, "check-alive");
    let no_error_on_unknown = flag(&q, &body, "noErrorOnUnknown");
    let r = ipam
        .claim(ident, cidr, check_alive, no_error_on_unknown)
        .await?;
    match r {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(AllocError::Cancelled { .. }) => Ok(text(StatusCode::OK, "cancelled".into())),
        Err(e) => Err(RequestError::Claim(e)),
    }
}

async fn lookup(ipam: &Handle, ident: String, range: Range) -> Result<Response, RequestError> {
    let cidrs = ipam
        .ask(|reply| Request::Lookup {
            ident,
            range,
            reply,
        })
        .await?;
    let body = cidrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    Ok(text(StatusCode::OK, body))
}

async fn lookup_default(
    State(ipam): State<Handle>,
    Path(id): Path<String>,
) -> Result<Response, RequestError> {
    let range = ipam.default_subnet.host_range();
    lookup(&ipam, id, range).await
}

async fn lookup_in(
    State(ipam): State<Handle>,
    Path((id, ip, len)): Path<(String, String, String)>,
) -> Result<Response, RequestError> {
    let range = subnet(&ip, &len)?.host_range();
    lookup(&ipam, id, range).await
}

async fn get_owned(State(ipam): State<Handle>) -> Result<Response, RequestError> {
    let owned = ipam.ask(Request::Owned).await?;
    let doc = serde_json::json!({
        "owned": owned.iter().map(|(id, cidrs)| serde_json::json!({
            "containerid": id,
            "addrs": cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        format!("{doc}\n"),
    )
        .into_response())
}

async fn free_one(
    State(ipam): State<Handle>,
    Path((ident, ip)): Path<(String, String)>,
) -> Result<Response, RequestError> {
    let addr: std::net::Ipv4Addr = ip
        .parse()
        .map_err(|_| RequestError::BadIp(ip.chars().take(64).collect()))?;
    let addr = Address::from(addr);
    ipam.ask(|reply| Request::Free { ident, addr, reply })
        .await?
        .map_err(RequestError::Free)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_all(
    State(ipam): State<Handle>,
    Path(ident): Path<String>,
) -> Result<Response, RequestError> {
    ipam.delete(ident).await?.map_err(alloc_err)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn default_subnet(State(ipam): State<Handle>) -> Response {
    text(StatusCode::OK, ipam.default_subnet.to_string())
}

async fn tracker() -> Response {
    // No AWS VPC or no-masq-local tracker: Weave Net prints the empty name.
    text(StatusCode::OK, String::new())
}

async fn prime(State(ipam): State<Handle>) -> Result<Response, RequestError> {
    match ipam.ask(Request::Prime).await? {
        Ok(()) | Err(AllocError::Cancelled { .. }) => Ok(text(StatusCode::OK, String::new())),
        Err(e) => Err(alloc_err(e)),
    }
}

async fn leave(State(ipam): State<Handle>) -> Result<Response, RequestError> {
    ipam.ask(Request::Shutdown).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn takeover(
    State(ipam): State<Handle>,
    Path(peer): Path<String>,
) -> Result<Response, RequestError> {
    let name = peer.clone();
    let n = ipam.ask(|reply| Request::Takeover { peer, reply }).await?;
    Ok(text(
        StatusCode::OK,
        format!("{n} IPs taken over from {name}\n"),
    ))
}

// `_` as an ident files the address under its own text; the allocator does that.
const _: &str = NO_CONTAINER_ID;
