//! What a request to the running router can fail with, typed once for every boundary that
//! asks: the HTTP API maps it to a status code and body in one place
//! (`impl IntoResponse for RequestError` in [`crate::http`]); the Docker plugin's `{"Err": …}`
//! and CNI's error codes will map the same type at their own boundaries.
//!
//! Each variant's text is what Weave Net's API answers with, so a boundary that passes text
//! on needs no table of its own.

use weft_attach::AttachError;

use weft_core::connection_maker::PeerError;
use weft_core::ipam::allocator::AllocError;
use weft_core::ipam::CidrError;

use crate::dataplane::DataplaneError;
use crate::template::TemplateError;

/// Why a request to the router failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The mesh task has ended (or dropped the request): the router is shutting down.
    #[error("router is shutting down")]
    ShuttingDown,
    /// A status view that does not exist (`/status/<view>`); the text is Go's.
    #[error("404 page not found")]
    UnknownView(String),
    /// `/report` with more than one `format`, or none where JSON was not asked for.
    #[error("error: must supply one format parameter")]
    FormatCount,
    /// A `/report` template that does not parse or fails to run.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Peers that `/connect` refused, one line each (the others were added).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    BadPeers(Vec<PeerError>),
    /// An address in the request that is not `a.b.c.d/len`.
    #[error("unable to parse ip addr: {0}")]
    BadAddress(#[source] AttachError),
    /// `weft expose` failed in the kernel or the firewall.
    #[error("unable to expose: {0}")]
    Expose(#[source] DataplaneError),
    /// `weft hide` failed in the kernel or the firewall.
    #[error("unable to hide: {0}")]
    Hide(#[source] DataplaneError),
    /// A subnet or address in an `/ip` path that IPAM refuses.
    #[error(transparent)]
    Subnet(#[from] CidrError),
    /// An IP in `DELETE /ip/{id}/{ip}` that does not parse.
    #[error("invalid IP address: {0}")]
    BadIp(String),
    /// The allocator refused an allocation, lookup or release.
    #[error(transparent)]
    Ipam(AllocError),
    /// The allocator refused a claim.
    #[error("Unable to claim: {0}")]
    Claim(#[source] AllocError),
    /// The allocator refused to free an address.
    #[error("Unable to free: {0}")]
    Free(#[source] AllocError),
    /// A call that starts or stops the plugin or the proxy without the control token.
    #[error("this call needs the router's control token, readable by root in the run dir's control.token")]
    Unauthorised,
    /// Starting or stopping the plugin or the proxy failed.
    #[error(transparent)]
    Part(crate::docker_parts::PartError),
}
