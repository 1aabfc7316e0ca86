//! The same operations for callers without a tokio runtime (the CLI, a CNI plugin): each call
//! opens its own netlink handle in the calling thread's namespace on a runtime of its own.

use std::future::Future;
use std::net::Ipv4Addr;

use weft_netdev::Netdev;
use weft_types::Ipv4Cidr;

use crate::{AttachError, Container, PsEntry};

/// [`crate::attach()`] with the calling thread's namespace as the host.
pub fn attach(
    c: &Container,
    cidrs: &[Ipv4Cidr],
    multicast_route: bool,
    probe: &[Ipv4Addr],
) -> Result<Vec<Ipv4Cidr>, AttachError> {
    on_host(|nl| async move { crate::attach(&nl, c, cidrs, multicast_route, probe).await })
}

/// [`crate::detach()`], which is blocking already; here so one module has all three.
pub fn detach(c: &Container, cidrs: &[Ipv4Cidr]) -> Result<Vec<Ipv4Cidr>, AttachError> {
    crate::detach(c, cidrs)
}

/// [`crate::ps()`] with the calling thread's namespace as the host.
pub fn ps(containers: &[(String, Container)]) -> Result<Vec<PsEntry>, AttachError> {
    on_host(|nl| async move { crate::ps(&nl, containers).await })
}

/// The container's weave interface (its `ps` line), if it has one.
pub fn interface(c: &Container) -> Result<Option<PsEntry>, AttachError> {
    // The first entry is the bridge's own (weave:expose).
    Ok(ps(&[(c.id(), c.clone())])?.into_iter().nth(1))
}

fn on_host<T, F, Fut>(f: F) -> Result<T, AttachError>
where
    F: FnOnce(Netdev) -> Fut,
    Fut: Future<Output = Result<T, AttachError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AttachError::Runtime)?;
    rt.block_on(async {
        let nl = Netdev::new().await?;
        f(nl).await
    })
}
