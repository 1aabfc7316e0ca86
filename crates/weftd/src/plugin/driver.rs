//! The libnetwork remote-driver protocol (`/Plugin.Activate`, `/NetworkDriver.*`,
//! `/IpamDriver.*`, all `POST` with JSON bodies) as axum routes for one socket, the networks
//! the driver was told of, and the one mapping of a failure to Docker's `{"Err": "..."}` (HTTP
//! 500). Unknown paths answer 404; a body that is not the JSON an endpoint expects is an error
//! answer, never a panic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{endpoint, ipam, MULTICAST_OPTION};
use crate::error::RequestError;

/// The largest request body taken.
const MAX_BODY: usize = 1 << 20;
/// Where Docker puts `--opt` values in `CreateNetwork`'s `Options`.
const GENERIC_OPTIONS: &str = "com.docker.network.generic";

/// Which of the two drivers a socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `weave`: scope `global`, no IPAM driver.
    Global,
    /// `weavemesh`: scope `local`, with weft's IPAM as IPAM driver.
    Local,
}

/// Why a plugin request failed; Docker shows the text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The body could not be read (too large, or cut off).
    #[error("reading request: {0}")]
    Body(String),
    /// The body is not the JSON the endpoint expects.
    #[error("decoding request: {0}")]
    Json(String),
    /// A `works.weave.multicast` value that is not a boolean.
    #[error("unrecognized value {value:?} for option {MULTICAST_OPTION}")]
    Option {
        /// The value given.
        value: String,
    },
    /// `CreateNetwork` for a network already known.
    #[error("network {0} already exists")]
    NetworkExists(String),
    /// `CreateEndpoint` without an interface.
    #[error("Not supported: creating an interface from within CreateEndpoint")]
    NoInterface,
    /// The IPAM driver was asked for IPv6.
    #[error("IPv6 is not supported by the weavemesh IPAM driver")]
    Ipv6,
    /// A pool or address that does not parse.
    #[error("{0}")]
    BadAddress(String),
    /// IPAM is off in this router.
    #[error("IPAM is disabled in this router (--ipalloc-range \"\")")]
    NoIpam,
    /// The IPAM task refused.
    #[error(transparent)]
    Ipam(#[from] RequestError),
    /// A veth could not be made.
    #[error(transparent)]
    Link(#[from] weft_attach::AttachError),
}

impl From<weft_netdev::NetdevError> for PluginError {
    fn from(e: weft_netdev::NetdevError) -> Self {
        Self::Link(e.into())
    }
}

impl IntoResponse for PluginError {
    fn into_response(self) -> Response {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "Err": self.to_string() })),
        )
            .into_response()
    }
}

/// What a network was created with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Whether joined containers get the multicast route.
    pub multicast: bool,
}

/// The networks Docker created with our drivers, by network ID; shared by both sockets and
/// the container watcher.
#[derive(Debug, Clone, Default)]
pub struct Networks(Arc<Mutex<HashMap<String, NetworkInfo>>>);

impl Networks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NetworkInfo>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The network `id`, if it is ours.
    pub fn get(&self, id: &str) -> Option<NetworkInfo> {
        self.lock().get(id).copied()
    }

    /// The network `id`, if it is ours; one Docker made before this router started (so never
    /// told us of) is looked up in `docker` and remembered.
    pub async fn find(
        &self,
        id: &str,
        docker: Option<&weft_docker::Docker>,
    ) -> Option<NetworkInfo> {
        if let Some(n) = self.get(id) {
            return Some(n);
        }
        let n = match docker?.network(id).await {
            Ok(Some(n)) => n,
            Ok(None) => return None,
            Err(e) => {
                tracing::info!("[plugin] looking up network {id}: {e}");
                return None;
            }
        };
        if n.driver != super::GLOBAL_DRIVER && n.driver != super::MESH_DRIVER {
            return None;
        }
        let info = options_info(n.options.iter().map(|(k, v)| (k.as_str(), v.clone())))
            .unwrap_or_default();
        self.lock().insert(n.id, info);
        Some(info)
    }
}

/// One socket's driver.
#[derive(Debug, Clone)]
pub struct Driver {
    /// Which driver.
    pub scope: Scope,
    /// Shared network records.
    pub networks: Networks,
    /// The IPAM task (used by the `Local` driver), when IPAM is on.
    pub ipam: Option<crate::ipam::task::Handle>,
    /// Whether Docker may be asked about networks made before the router started.
    pub docker: bool,
}

/// The routes of one socket.
pub fn routes(driver: Driver) -> Router {
    let r = Router::new()
        .route("/Plugin.Activate", post(activate))
        .route("/NetworkDriver.GetCapabilities", post(capabilities))
        .route("/NetworkDriver.CreateNetwork", post(create_network))
        .route("/NetworkDriver.DeleteNetwork", post(delete_network))
        .route("/NetworkDriver.AllocateNetwork", post(allocate_network))
        .route("/NetworkDriver.FreeNetwork", post(free_network))
        .route("/NetworkDriver.CreateEndpoint", post(create_endpoint))
        .route("/NetworkDriver.DeleteEndpoint", post(delete_endpoint))
        .route("/NetworkDriver.EndpointOperInfo", post(oper_info))
        .route("/NetworkDriver.Join", post(join))
        .route("/NetworkDriver.Leave", post(empty))
        .route("/NetworkDriver.ProgramExternalConnectivity", post(empty))
        .route("/NetworkDriver.RevokeExternalConnectivity", post(empty));
    let r = if driver.scope == Scope::Local {
        r.merge(ipam::routes())
    } else {
        r
    };
    r.layer(DefaultBodyLimit::max(MAX_BODY)).with_state(driver)
}

/// The request body as `T`.
pub(super) fn parse<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, PluginError> {
    let body = body.map_err(|e| PluginError::Body(e.body_text()))?;
    serde_json::from_slice(&body).map_err(|e| PluginError::Json(e.to_string()))
}

/// A JSON success answer.
pub(super) type Answer = Result<Json<Value>, PluginError>;

async fn activate(State(d): State<Driver>) -> Json<Value> {
    let implements = match d.scope {
        Scope::Global => json!(["NetworkDriver"]),
        Scope::Local => json!(["NetworkDriver", "IpamDriver"]),
    };
    Json(json!({ "Implements": implements }))
}

async fn capabilities(State(d): State<Driver>) -> Json<Value> {
    let scope = match d.scope {
        Scope::Global => "global",
        Scope::Local => "local",
    };
    Json(json!({ "Scope": scope }))
}

async fn empty() -> Json<Value> {
    Json(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkRequest {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(default)]
    options: HashMap<String, Value>,
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// What a network's driver options (`key`, `value` as text) ask of it.
fn options_info<'a>(
    options: impl IntoIterator<Item = (&'a str, String)>,
) -> Result<NetworkInfo, PluginError> {
    let mut info = NetworkInfo::default();
    for (key, text) in options {
        if key != MULTICAST_OPTION {
            tracing::warn!("[plugin] unrecognized option: {}", weft_wire::bounded(key));
            continue;
        }
        // `--opt works.weave.multicast` alone turns it on.
        info.multicast = text.is_empty()
            || parse_bool(&text).ok_or_else(|| PluginError::Option {
                value: weft_wire::bounded(&text),
            })?;
    }
    Ok(info)
}

/// What `Options["com.docker.network.generic"]` of `CreateNetwork` asks of a network.
fn network_info(options: &HashMap<String, Value>) -> Result<NetworkInfo, PluginError> {
    let Some(Value::Object(generic)) = options.get(GENERIC_OPTIONS) else {
        return Ok(NetworkInfo::default());
    };
    options_info(generic.iter().map(|(k, v)| {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        (k.as_str(), text)
    }))
}

async fn create_network(State(d): State<Driver>, body: Result<Bytes, BytesRejection>) -> Answer {
    let req: NetworkRequest = parse(body)?;
    let info = network_info(&req.options)?;
    let mut nets = d.networks.lock();
    if nets.contains_key(&req.network_id) {
        return Err(PluginError::NetworkExists(weft_wire::bounded(
            &req.network_id,
        )));
    }
    tracing::info!("[plugin] network {} created ({info:?})", req.network_id);
    nets.insert(req.network_id, info);
    Ok(Json(json!({})))
}

async fn delete_network(State(d): State<Driver>, body: Result<Bytes, BytesRejection>) -> Answer {
    let req: NetworkRequest = parse(body)?;
    d.networks.lock().remove(&req.network_id);
    Ok(Json(json!({})))
}

async fn allocate_network(body: Result<Bytes, BytesRejection>) -> Answer {
    let req: NetworkRequest = parse(body)?;
    Ok(Json(json!({ "Options": req.options })))
}

async fn free_network(body: Result<Bytes, BytesRejection>) -> Answer {
    let _: NetworkRequest = parse(body)?;
    Ok(Json(Value::Null))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointRequest {
    #[serde(rename = "NetworkID", default)]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default)]
    interface: Option<InterfaceRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InterfaceRequest {
    #[serde(default)]
    mac_address: String,
}

async fn create_endpoint(body: Result<Bytes, BytesRejection>) -> Answer {
    let req: EndpointRequest = parse(body)?;
    let iface = req.interface.ok_or(PluginError::NoInterface)?;
    let mac = endpoint::create(&req.endpoint_id).await?;
    // Docker refuses a MAC address from the driver when it chose one itself.
    if iface.mac_address.is_empty() {
        Ok(Json(json!({ "Interface": { "MacAddress": mac } })))
    } else {
        Ok(Json(json!({ "Interface": {} })))
    }
}

async fn delete_endpoint(body: Result<Bytes, BytesRejection>) -> Answer {
    let req: EndpointRequest = parse(body)?;
    endpoint::delete(&req.endpoint_id).await;
    Ok(Json(json!({})))
}

async fn oper_info(body: Result<Bytes, BytesRejection>) -> Answer {
    let _: EndpointRequest = parse(body)?;
    Ok(Json(json!({ "Value": {} })))
}

async fn join(State(d): State<Driver>, body: Result<Bytes, BytesRejection>) -> Answer {
    let req: EndpointRequest = parse(body)?;
    // A network we were not told of: ask Docker (a client only then).
    let docker = match d.networks.get(&req.network_id) {
        None if d.docker => match weft_docker::Docker::from_env() {
            Ok(c) => c.negotiate().await.ok(),
            Err(_) => None,
        },
        _ => None,
    };
    let multicast = d
        .networks
        .find(&req.network_id, docker.as_ref())
        .await
        .is_some_and(|n| n.multicast);
    let mut answer = json!({
        "InterfaceName": {
            "SrcName": endpoint::guest_name(&req.endpoint_id),
            "DstPrefix": weft_attach::CONTAINER_IF,
        },
    });
    if multicast {
        // RouteType 1: CONNECTED (no next hop).
        answer["StaticRoutes"] = json!([{ "Destination": "224.0.0.0/4", "RouteType": 1 }]);
    }
    Ok(Json(answer))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    fn driver(scope: Scope) -> Driver {
        Driver {
            scope,
            networks: Networks::default(),
            ipam: None,
            docker: false,
        }
    }

    async fn call(d: &Driver, path: &str, body: &str) -> (StatusCode, String) {
        let req = Request::post(path)
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = routes(d.clone()).oneshot(req).await.unwrap();
        let code = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (code, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn activate_and_scope_per_socket() {
        let mesh = driver(Scope::Local);
        let global = driver(Scope::Global);
        assert_eq!(
            call(&mesh, "/Plugin.Activate", "").await.1,
            r#"{"Implements":["NetworkDriver","IpamDriver"]}"#
        );
        assert_eq!(
            call(&global, "/Plugin.Activate", "").await.1,
            r#"{"Implements":["NetworkDriver"]}"#
        );
        assert_eq!(
            call(&global, "/NetworkDriver.GetCapabilities", "{}")
                .await
                .1,
            r#"{"Scope":"global"}"#
        );
        // The global driver has no IPAM endpoints.
        assert_eq!(
            call(&global, "/IpamDriver.GetCapabilities", "{}").await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn unknown_endpoint_is_404() {
        let d = driver(Scope::Local);
        assert_eq!(
            call(&d, "/NetworkDriver.Nope", "{}").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(call(&d, "/", "").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn bad_json_is_an_err_answer() {
        let d = driver(Scope::Local);
        for body in ["", "{", "[1,2]", r#"{"NetworkID":5}"#, "\u{0}\u{ff}"] {
            let (code, text) = call(&d, "/NetworkDriver.CreateNetwork", body).await;
            assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{body:?}");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert!(
                v["Err"].as_str().unwrap().starts_with("decoding request: "),
                "{text}"
            );
        }
        let big = format!(r#"{{"NetworkID":"{}"}}"#, "a".repeat(MAX_BODY + 1));
        let (code, text) = call(&d, "/NetworkDriver.CreateNetwork", &big).await;
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(text.starts_with(r#"{"Err":"reading request: "#), "{text}");
    }

    #[tokio::test]
    async fn multicast_option_and_join() {
        let d = driver(Scope::Local);
        let create = |id: &str, v: &str| {
            format!(
                r#"{{"NetworkID":"{id}","Options":{{"com.docker.network.generic":{{"works.weave.multicast":{v},"other":"1"}}}}}}"#
            )
        };
        let (code, text) = call(&d, "/NetworkDriver.CreateNetwork", &create("n1", r#""x""#)).await;
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            text,
            r#"{"Err":"unrecognized value \"x\" for option works.weave.multicast"}"#
        );
        assert_eq!(d.networks.get("n1"), None);
        for (id, v, on) in [
            ("n1", r#""true""#, true),
            ("n2", r#""""#, true),
            ("n3", r#""0""#, false),
        ] {
            let (code, _) = call(&d, "/NetworkDriver.CreateNetwork", &create(id, v)).await;
            assert_eq!(code, StatusCode::OK);
            assert_eq!(d.networks.get(id), Some(NetworkInfo { multicast: on }));
        }
        let (code, text) = call(&d, "/NetworkDriver.CreateNetwork", &create("n1", r#""1""#)).await;
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(text, r#"{"Err":"network n1 already exists"}"#);
        let join = |n: &str| {
            format!(r#"{{"NetworkID":"{n}","EndpointID":"0123456789abcdef","SandboxKey":"/x"}}"#)
        };
        assert_eq!(
            call(&d, "/NetworkDriver.Join", &join("n1")).await.1,
            r#"{"InterfaceName":{"DstPrefix":"ethwe","SrcName":"vethwg012345678"},"StaticRoutes":[{"Destination":"224.0.0.0/4","RouteType":1}]}"#
        );
        assert_eq!(
            call(&d, "/NetworkDriver.Join", &join("n3")).await.1,
            r#"{"InterfaceName":{"DstPrefix":"ethwe","SrcName":"vethwg012345678"}}"#
        );
        call(&d, "/NetworkDriver.DeleteNetwork", r#"{"NetworkID":"n1"}"#).await;
        assert_eq!(d.networks.get("n1"), None);
    }

    #[tokio::test]
    async fn create_endpoint_needs_an_interface() {
        let d = driver(Scope::Local);
        let (code, text) = call(
            &d,
            "/NetworkDriver.CreateEndpoint",
            r#"{"NetworkID":"n","EndpointID":"0123456789"}"#,
        )
        .await;
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            text,
            r#"{"Err":"Not supported: creating an interface from within CreateEndpoint"}"#
        );
        assert_eq!(
            call(
                &d,
                "/NetworkDriver.EndpointOperInfo",
                r#"{"EndpointID":"x"}"#
            )
            .await
            .1,
            r#"{"Value":{}}"#
        );
    }
}
