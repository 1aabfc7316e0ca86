//! The `weavemesh` IPAM driver (`/IpamDriver.*`): pools and addresses from weft's IPAM task,
//! called in-process. Addresses are owned under the ident `_`, so the allocator files each
//! under its own text, and a release is a delete of that ident. A pool's ID carries its subnet
//! and allocation range (`weave-<subnet>-<range>`); its "gateway" is the subnet's own address,
//! which is never allocated.

use std::net::Ipv4Addr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use weft_core::ipam::allocator::{AllocError, NO_CONTAINER_ID};
use weft_core::ipam::parse_subnet;
use weft_types::Ipv4Cidr;

use super::driver::{parse, Answer, Driver, PluginError};

/// Docker's key for a pool's gateway in `RequestPool`'s answer.
const GATEWAY: &str = "com.docker.network.gateway";
/// The pool ID of plugins before 1.2: the default subnet.
const OLD_POOL: &str = "weavepool";

/// The IPAM endpoints.
pub(super) fn routes() -> Router<Driver> {
    Router::new()
        .route("/IpamDriver.GetCapabilities", post(capabilities))
        .route("/IpamDriver.GetDefaultAddressSpaces", post(address_spaces))
        .route("/IpamDriver.RequestPool", post(request_pool))
        .route("/IpamDriver.ReleasePool", post(release_pool))
        .route("/IpamDriver.RequestAddress", post(request_address))
        .route("/IpamDriver.ReleaseAddress", post(release_address))
}

async fn capabilities() -> Json<Value> {
    Json(json!({ "RequiresMACAddress": false, "RequiresRequestReplay": false }))
}

async fn address_spaces() -> Json<Value> {
    Json(json!({
        "LocalDefaultAddressSpace": "weavelocal",
        "GlobalDefaultAddressSpace": "weaveglobal",
    }))
}

fn ipam(d: &Driver) -> Result<&crate::ipam::task::Handle, PluginError> {
    d.ipam.as_ref().ok_or(PluginError::NoIpam)
}

fn subnet(s: &str) -> Result<Ipv4Cidr, PluginError> {
    parse_subnet(s).map_err(|e| PluginError::BadAddress(e.to_string()))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PoolRequest {
    #[serde(default)]
    pool: String,
    #[serde(default)]
    sub_pool: String,
    #[serde(rename = "V6", default)]
    v6: bool,
}

async fn request_pool(State(d): State<Driver>, body: Result<Bytes, BytesRejection>) -> Answer {
    let req: PoolRequest = parse(body)?;
    if req.v6 {
        return Err(PluginError::Ipv6);
    }
    let (pool, range) = if req.pool.is_empty() {
        let s = ipam(&d)?.default_subnet;
        (s, s)
    } else {
        let s = subnet(&req.pool)?;
        let r = if req.sub_pool.is_empty() {
            s
        } else {
            subnet(&req.sub_pool)?
        };
        (s, r)
    };
    Ok(Json(json!({
        "PoolID": format!("weave-{pool}-{range}"),
        "Pool": pool.to_string(),
        "Data": { GATEWAY: pool.to_string() },
    })))
}

async fn release_pool(body: Result<Bytes, BytesRejection>) -> Answer {
    let _: Value = parse(body)?;
    Ok(Json(json!({})))
}

/// A pool ID's subnet and range; `None` for the old-style pool (the default subnet).
fn split_pool(id: &str) -> Result<Option<(Ipv4Cidr, Ipv4Cidr)>, PluginError> {
    if id == OLD_POOL {
        return Ok(None);
    }
    let bad = || PluginError::BadAddress(format!("invalid pool ID {:?}", weft_wire::bounded(id)));
    let rest = id.strip_prefix("weave-").ok_or_else(bad)?;
    let (s, r) = rest.split_once('-').ok_or_else(bad)?;
    Ok(Some((subnet(s)?, subnet(r)?)))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddressRequest {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(default)]
    address: String,
}

fn address(s: &str) -> Result<Option<Ipv4Addr>, PluginError> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        PluginError::BadAddress(format!("invalid IP address {:?}", weft_wire::bounded(s)))
    })
}

fn refused(e: AllocError) -> PluginError {
    PluginError::Ipam(crate::error::RequestError::Ipam(e))
}

async fn request_address(State(d): State<Driver>, body: Result<Bytes, BytesRejection>) -> Answer {
    let req: AddressRequest = parse(body)?;
    let ipam = ipam(&d)?;
    let ident = NO_CONTAINER_ID.to_string();
    let (pool, range) =
        split_pool(&req.pool_id)?.unwrap_or((ipam.default_subnet, ipam.default_subnet));
    let cidr = match address(&req.address)? {
        // The pool's fake gateway: nothing to claim.
        Some(a) if a == pool.addr() => pool,
        Some(a) => {
            let cidr = pool.with_addr(a);
            ipam.claim(ident, cidr, false, false)
                .await?
                .map_err(|e| PluginError::Ipam(crate::error::RequestError::Claim(e)))?;
            cidr
        }
        None => {
            let got = ipam.allocate(ident, range, false).await?.map_err(refused)?;
            // The range may be narrower than the subnet the container lives in.
            pool.with_addr(got.addr())
        }
    };
    Ok(Json(json!({ "Address": cidr.to_string(), "Data": null })))
}

async fn release_address(State(d): State<Driver>, body: Result<Bytes, BytesRejection>) -> Answer {
    let req: AddressRequest = parse(body)?;
    let ipam = ipam(&d)?;
    let Some(a) = address(&req.address)? else {
        return Ok(Json(json!({})));
    };
    if let Some((pool, _)) = split_pool(&req.pool_id)? {
        if a == pool.addr() {
            return Ok(Json(json!({})));
        }
    }
    ipam.delete(a.to_string()).await?.map_err(refused)?;
    Ok(Json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids() {
        assert_eq!(split_pool("weavepool").unwrap(), None);
        let (s, r) = split_pool("weave-10.32.0.0/12-10.32.1.0/24")
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.to_string().as_str(), r.to_string().as_str()),
            ("10.32.0.0/12", "10.32.1.0/24")
        );
        for bad in [
            "",
            "weave-",
            "weave-10.32.0.0/12",
            "weave-x-y",
            "other-10.0.0.0/8-10.0.0.0/8",
        ] {
            assert!(split_pool(bad).is_err(), "{bad:?}");
        }
    }
}
