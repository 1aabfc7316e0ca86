//! A Docker endpoint's veth pair, as Weave Net names it: `vethwl<EndpointID[:9]>` on the weave
//! bridge (up) and `vethwg<EndpointID[:9]>`, which Docker moves into the container and renames
//! `ethwe`. The plumbing is weft-attach's, the same as `weft attach` uses.

use weft_attach::{AttachError, BRIDGE};
use weft_netdev::Netdev;

use super::driver::PluginError;

/// The first `n` characters of an endpoint ID.
fn short(id: &str, n: usize) -> &str {
    id.char_indices().nth(n).map_or(id, |(i, _)| &id[..i])
}

/// The host end's name (`len` characters of the ID: 9, or 5 before Weave Net 2.0).
fn local_name(id: &str, len: usize) -> String {
    format!("vethwl{}", short(id, len))
}

/// The container end's name, which `Join` hands to Docker.
pub(super) fn guest_name(id: &str) -> String {
    format!("vethwg{}", short(id, 9))
}

/// Creates the pair for endpoint `id`; returns the container end's MAC address.
pub(super) async fn create(id: &str) -> Result<String, PluginError> {
    let nl = Netdev::new().await?;
    let bridge = nl.link(BRIDGE).await?.ok_or(AttachError::NoBridge)?;
    let (_, guest) =
        weft_attach::bridge_veth(&nl, &bridge, &local_name(id, 9), &guest_name(id)).await?;
    Ok(weft_netdev::format_mac(&guest.mac))
}

/// Deletes the pair of endpoint `id` (under either name); a pair that is gone already is fine.
pub(super) async fn delete(id: &str) {
    let nl = match Netdev::new().await {
        Ok(nl) => nl,
        Err(e) => {
            tracing::warn!("[plugin] deleting endpoint {id}: {e}");
            return;
        }
    };
    for len in [9, 5] {
        let name = local_name(id, len);
        if let Ok(Some(l)) = nl.link(&name).await {
            if let Err(e) = nl.delete_link(l.index).await {
                tracing::warn!("[plugin] deleting {name}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(local_name("0123456789abcdef", 9), "vethwl012345678");
        assert_eq!(local_name("0123456789abcdef", 5), "vethwl01234");
        assert_eq!(guest_name("abc"), "vethwgabc");
        assert_eq!(guest_name("ééééééééééé"), "vethwgééééééééé");
    }
}
