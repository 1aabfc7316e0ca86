//! Serving one client connection: each request is classified (`calls`), intercepted ones are
//! rewritten or held, and every request goes to the Docker daemon on a connection of its own.
//! Responses stream back as they come (chunked bodies, `/events`, `logs -f`); a `101
//! Switching Protocols` answer (attach and exec with `Upgrade: tcp`) joins the client's
//! connection to the daemon's, byte for byte, until either side closes.
//!
//! Bounded: the request head must arrive within [`HEAD_TIMEOUT`] and fit [`MAX_HEAD`]
//! (hyper answers 431 otherwise), a body the proxy reads must fit [`MAX_BODY`]. Errors of
//! its own are Docker-style: 404 or 500 with `{"message": …}`.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use super::attach::{short, Attacher};
use super::calls::{classify, Call};
use super::cidr::weave_cidrs;
use super::rewrite::{self, DnsSettings, HostnameRule};

/// How long a client has to send a request head.
pub(super) const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head (hyper's read buffer).
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// The largest body the proxy reads to rewrite.
pub(super) const MAX_BODY: usize = 1024 * 1024;
/// How long connecting to the daemon may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A body of either side.
pub(super) type Body = BoxBody<Bytes, hyper::Error>;

/// Where the Docker daemon is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// `unix:///path`.
    Unix(PathBuf),
    /// `tcp://host:port`.
    Tcp(String),
}

impl Upstream {
    /// `DOCKER_HOST` as the docker CLI reads it.
    pub fn parse(host: &str) -> Result<Self, String> {
        if let Some(p) = host.strip_prefix("unix://") {
            return Ok(Self::Unix(PathBuf::from(p)));
        }
        if let Some(a) = host.strip_prefix("tcp://") {
            return Ok(Self::Tcp(a.trim_end_matches('/').to_string()));
        }
        Err(format!(
            "DOCKER_HOST {host:?}: expected unix:///path/to/socket or tcp://host:port"
        ))
    }

    /// Sends `req` on a new connection and returns the answer.
    async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        let connect = async {
            match self {
                Self::Unix(p) => {
                    let s = tokio::net::UnixStream::connect(p).await?;
                    Ok::<_, std::io::Error>(Stream::Unix(s))
                }
                Self::Tcp(a) => Ok(Stream::Tcp(tokio::net::TcpStream::connect(a).await?)),
            }
        };
        let io = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return Err(ProxyError::Daemon(format!("{self}: {e}"))),
            Err(_) => return Err(ProxyError::Daemon(format!("{self}: connect timed out"))),
        };
        match io {
            Stream::Unix(s) => exchange(s, req).await,
            Stream::Tcp(s) => exchange(s, req).await,
        }
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn exchange<S>(io: S, req: Request<Body>) -> Result<Response<Incoming>, ProxyError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ProxyError::Daemon(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("[proxy] daemon connection: {e}");
        }
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| ProxyError::Daemon(e.to_string()))
}

/// An error the proxy answers itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(super) enum ProxyError {
    /// No such container or image: 404.
    #[error("{0}")]
    NotFound(String),
    /// Anything else: 500.
    #[error("{0}")]
    Failed(String),
    /// The daemon could not be reached: 500.
    #[error("Cannot connect to the Docker daemon: {0}")]
    Daemon(String),
}

impl ProxyError {
    fn response(&self) -> Response<Body> {
        let status = match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = serde_json::json!({ "message": self.to_string() }).to_string();
        let mut r = Response::new(full(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

/// What every connection shares.
#[derive(Debug)]
pub(super) struct Shared {
    /// The daemon.
    pub(super) upstream: Upstream,
    /// A client for the proxy's own calls to the daemon, made on first use.
    pub(super) docker: tokio::sync::OnceCell<weft_docker::Docker>,
    /// Host directories bound at `/w`: the default one and `/w-nomcast`'s; `Err`: why
    /// weavewait is not available.
    pub(super) wait_dir: Result<PathBuf, String>,
    /// `--hostname-*`.
    pub(super) rule: HostnameRule,
    /// weftDNS for containers, unless `--without-dns` or DNS is off.
    pub(super) dns: Option<DnsSettings>,
    /// `--no-default-ipalloc`.
    pub(super) no_default_ipalloc: bool,
    /// `--rewrite-inspect`.
    pub(super) rewrite_inspect: bool,
    /// Attaches containers.
    pub(super) attacher: Attacher,
}

impl Shared {
    async fn docker(&self) -> Result<&weft_docker::Docker, ProxyError> {
        let host = self.upstream.to_string();
        self.docker
            .get_or_try_init(
                || async move { weft_docker::Docker::connect(&host)?.negotiate().await },
            )
            .await
            .map_err(|e| ProxyError::Daemon(e.to_string()))
    }
}

/// Answers one request.
pub(super) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let call = classify(req.method(), req.uri().path());
    let req = req.map(BodyExt::boxed);
    let r = match call {
        Call::Create => create(&shared, req).await,
        Call::Start(id) => start(&shared, &id, req).await,
        Call::Exec(id) => exec(&shared, &id, req).await,
        Call::Inspect(id) if shared.rewrite_inspect => inspect(&shared, &id, req).await,
        Call::Inspect(_) | Call::Other => forward(&shared, req).await,
    };
    Ok(r.unwrap_or_else(|e| {
        tracing::info!("[proxy] {e}");
        e.response()
    }))
}

/// Sends `req` on unchanged and streams the answer back; joins both connections when the
/// daemon switches protocols.
async fn forward(shared: &Shared, mut req: Request<Body>) -> Result<Response<Body>, ProxyError> {
    let client_side = hyper::upgrade::on(&mut req);
    let mut resp = shared.upstream.send(req).await?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let daemon_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client_side, daemon_side) {
                Ok((c, d)) => {
                    let (mut c, mut d) = (TokioIo::new(c), TokioIo::new(d));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut d).await;
                }
                Err(e) => tracing::debug!("[proxy] upgrade: {e}"),
            }
        });
    }
    Ok(resp.map(BodyExt::boxed))
}

/// Reads a body the proxy rewrites, at most [`MAX_BODY`] bytes.
async fn read_body(body: Body) -> Result<Bytes, ProxyError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ProxyError::Failed(format!(
            "request body larger than {MAX_BODY} bytes"
        ))),
        Err(e) => Err(ProxyError::Failed(format!("reading the request body: {e}"))),
    }
}

/// `req`'s head with a new body of `bytes`.
fn with_body(parts: hyper::http::request::Parts, bytes: Bytes) -> Request<Body> {
    let mut req = Request::from_parts(parts, full(bytes.clone()));
    req.headers_mut().remove(TRANSFER_ENCODING);
    req.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    req
}

/// Sends the request `parts` with the JSON body `v` on.
async fn forward_json(
    shared: &Shared,
    parts: hyper::http::request::Parts,
    v: &Value,
) -> Result<Response<Body>, ProxyError> {
    let out = serde_json::to_vec(v).map_err(|e| ProxyError::Failed(e.to_string()))?;
    forward(shared, with_body(parts, Bytes::from(out))).await
}

/// The `name` query parameter.
fn query_name(uri: &hyper::Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "name" && !v.is_empty()).then(|| v.to_string())
    })
}

async fn create(shared: &Shared, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(body).await?;
    // A body that is not JSON goes to Docker as it came: the client gets Docker's own error.
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return forward(shared, with_body(parts, bytes)).await;
    };
    let (mode, env) = rewrite::mode_and_env(&v);
    match weave_cidrs(&mode, &env, shared.no_default_ipalloc) {
        Ok(_) => {}
        Err(e) if e.is_left_alone() => {
            tracing::info!("[proxy] {e}");
            return forward(shared, with_body(parts, bytes)).await;
        }
        Err(e) => return Err(ProxyError::Failed(e.to_string())),
    }
    let wait_dir = shared
        .wait_dir
        .as_ref()
        .map_err(|e| ProxyError::Failed(e.clone()))?;
    let image = match rewrite::image_to_inspect(&v) {
        Some(name) => match shared.docker().await?.image_command(&name).await {
            Ok(Some(x)) => Some(x),
            Ok(None) => return Err(ProxyError::NotFound(format!("No such image: {name}"))),
            Err(e) => return Err(ProxyError::Failed(e.to_string())),
        },
        None => None,
    };
    let name = query_name(&parts.uri);
    let warning = rewrite::rewrite_create(
        &mut v,
        &wait_dir.to_string_lossy(),
        image,
        name.as_deref(),
        &shared.rule,
        shared.dns.as_ref(),
    )
    .map_err(|e| ProxyError::Failed(e.to_string()))?;
    if let Some(w) = warning {
        tracing::warn!("[proxy] {w}");
    }
    forward_json(shared, parts, &v).await
}

/// `start` and `restart`: answered once the container is attached; a failed attach kills the
/// container and answers 500.
async fn start(
    shared: &Shared,
    id: &str,
    req: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    // Held from before Docker starts it: its start event may come before Docker answers.
    let _call = shared.attacher.start_call(id);
    let resp = forward(shared, req).await?;
    if !resp.status().is_success() {
        return Ok(resp);
    }
    let docker = shared.docker().await?;
    if let Err(e) = shared.attacher.attach(docker, id).await {
        tracing::warn!("[proxy] attaching container {}: {e}; killing it", short(id));
        if let Err(k) = docker.kill(id).await {
            tracing::warn!("[proxy] killing container {}: {k}", short(id));
        }
        return Err(ProxyError::Failed(e.to_string()));
    }
    Ok(resp)
}

/// `exec` in a container the proxy handles runs its command through weavewait.
async fn exec(shared: &Shared, id: &str, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(body).await?;
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return forward(shared, with_body(parts, bytes)).await;
    };
    let ours = match shared.docker().await?.inspect(id).await {
        Ok(Some(c)) => {
            c.mount_destinations.iter().any(|m| m == rewrite::WAIT_DIR)
                && matches!(shared.attacher.cidrs_of(&c), Ok(Some(_)))
        }
        // Docker answers for a container it does not know.
        Ok(None) => false,
        Err(e) => return Err(ProxyError::Failed(e.to_string())),
    };
    if !ours || rewrite::rewrite_exec(&mut v).is_err() {
        return forward(shared, with_body(parts, bytes)).await;
    }
    forward_json(shared, parts, &v).await
}

/// `--rewrite-inspect`: a handled container's `NetworkSettings` show its first weave address.
async fn inspect(
    shared: &Shared,
    id: &str,
    req: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    let resp = forward(shared, req).await?;
    if resp.status() != StatusCode::OK {
        return Ok(resp);
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match Limited::new(body, 16 * MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return Err(ProxyError::Failed(format!(
                "reading the daemon's answer: {e}"
            )))
        }
    };
    let rewritten = async {
        let mut v = serde_json::from_slice::<Value>(&bytes).ok()?;
        let c = shared.docker().await.ok()?.inspect(id).await.ok()??;
        shared.attacher.cidrs_of(&c).ok()??;
        let pid = c.pid?;
        let first = tokio::task::spawn_blocking(move || {
            super::weave_addrs(pid).and_then(|(a, mac)| a.first().map(|c| (*c, mac)))
        })
        .await
        .ok()??;
        let ns = v.get_mut("NetworkSettings")?.as_object_mut()?;
        ns.insert("IPAddress".into(), first.0.addr().to_string().into());
        ns.insert("IPPrefixLen".into(), first.0.prefix_len().into());
        ns.insert("MacAddress".into(), first.1.into());
        serde_json::to_vec(&v).ok()
    }
    .await;
    let out = Bytes::from(rewritten.unwrap_or_else(|| bytes.to_vec()));
    parts.headers.remove(TRANSFER_ENCODING);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(parts, full(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams() {
        assert_eq!(
            Upstream::parse("unix:///var/run/docker.sock"),
            Ok(Upstream::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            Upstream::parse("tcp://127.0.0.1:2375/"),
            Ok(Upstream::Tcp("127.0.0.1:2375".into()))
        );
        assert!(Upstream::parse("ssh://x").is_err());
        assert_eq!(Upstream::Unix("/a".into()).to_string(), "unix:///a");
    }

    #[test]
    fn name_parameter() {
        let u: hyper::Uri = "/v1.41/containers/create?name=web&x=1".parse().unwrap();
        assert_eq!(query_name(&u).as_deref(), Some("web"));
        let u: hyper::Uri = "/containers/create?name=".parse().unwrap();
        assert_eq!(query_name(&u), None);
        let u: hyper::Uri = "/containers/create".parse().unwrap();
        assert_eq!(query_name(&u), None);
    }

    #[test]
    fn errors_are_docker_style() {
        let r = ProxyError::NotFound("No such image: x".into()).response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = ProxyError::Failed("boom".into()).response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
