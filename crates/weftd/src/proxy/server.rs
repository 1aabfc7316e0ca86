//! Serving one client connection: each request is classified (`calls`), intercepted ones are
//! rewritten or held, and every request goes to the Docker daemon on a connection of its own.
//! Responses stream back as they come (chunked bodies, `/events`, `logs -f`); a `101
//! Switching Protocols` answer (attach and exec with `Upgrade: tcp`) joins the client's
//! connection to the daemon's, byte for byte, until both sides have closed.
//!
//! A raw-stream hijack without `Upgrade:` (clients before Docker 1.12: `POST …/attach` or
//! `/exec/{id}/start` answered `200 OK` with `application/vnd.docker.raw-stream`, then stdin
//! on the same connection) is told from the connection's first request head, read here before
//! hyper ([`serve_connection`]), and joined to the daemon the same way from that head on.
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
use hyper::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::attach::{short, Attacher};
use super::calls::{classify, hijackable, Call};
use super::cidr::weave_cidrs;
use super::rewrite::{self, DnsSettings, HostnameRule, WaitBinds};

/// How long a client has to send a request head.
pub(super) const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head (hyper's read buffer).
const MAX_HEAD: usize = 64 * 1024;
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

    /// A new connection to the daemon.
    async fn connect(&self) -> Result<Box<dyn Io>, ProxyError> {
        let connect = async {
            Ok::<Box<dyn Io>, std::io::Error>(match self {
                Self::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
                Self::Tcp(a) => Box::new(tokio::net::TcpStream::connect(a).await?),
            })
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(io)) => Ok(io),
            Ok(Err(e)) => Err(ProxyError::Daemon(format!("{self}: {e}"))),
            Err(_) => Err(ProxyError::Daemon(format!("{self}: connect timed out"))),
        }
    }

    /// Sends `req` on a new connection and returns the answer.
    async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        exchange(self.connect().await?, req).await
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

/// A connection of either kind.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

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

/// Serves one client connection until it closes.
///
/// hyper hands a connection over only after a request with `Upgrade:`, so a hijack without it
/// cannot be served through hyper: the client's stdin, written after the `200 OK`, would be
/// read as the next request. The first request head is therefore read here, within
/// [`HEAD_TIMEOUT`] and [`MAX_HEAD`]: a call that may hijack without asking to upgrade is
/// joined to the daemon from its head on ([`hijack_head`]); anything else, and anything this
/// does not read (hyper answers it), goes to hyper with the bytes read so far. Only the first
/// request is looked at: clients dial a connection of their own for a hijack, since they take
/// it over once answered (a later one on a kept-alive connection passes the daemon's output
/// only).
pub(super) async fn serve_connection<S>(mut io: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(Ok((buf, end))) = tokio::time::timeout(HEAD_TIMEOUT, read_first_head(&mut io)).await
    else {
        // As hyper does: a head that does not come in time closes the connection.
        return;
    };
    if buf.is_empty() {
        return;
    }
    if let Some(head) = end.and_then(|end| hijack_head(&buf[..end]).map(|h| (h, end))) {
        match shared.upstream.connect().await {
            Ok(mut daemon) => {
                // The head, then whatever came after it (a body, stdin).
                let sent = async {
                    daemon.write_all(&head.0).await?;
                    daemon.write_all(&buf[head.1..]).await
                };
                match sent.await {
                    Ok(()) => join(io, daemon).await,
                    Err(e) => tracing::debug!("[proxy] hijack: {e}"),
                }
                return;
            }
            // hyper serves the call instead, to answer the error as for any other call.
            Err(e) => tracing::debug!("[proxy] hijack: {e}"),
        }
    }
    let (r, w) = tokio::io::split(io);
    let io = tokio::io::join(std::io::Cursor::new(buf).chain(r), w);
    let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!("[proxy] connection: {e}");
    }
}

/// Reads a connection's first request head: what was read (perhaps more than the head) and
/// where the head ends; no end when the connection closed or [`MAX_HEAD`] bytes came first.
async fn read_first_head<S: AsyncRead + Unpin>(
    io: &mut S,
) -> std::io::Result<(Vec<u8>, Option<usize>)> {
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let from = buf.len().saturating_sub(2);
        let n = io.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        let end = head_end(&buf, from);
        if end.is_some() || n == 0 || buf.len() >= MAX_HEAD {
            return Ok((buf, end));
        }
    }
}

/// Where a request head ends, just past its empty line, looking for it from `from` on (lines
/// end in `\r\n` or a bare `\n`).
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find_map(|i| {
        if buf[i] != b'\n' {
            return None;
        }
        match buf.get(i + 1..) {
            Some([b'\n', ..]) => Some(i + 2),
            Some([b'\r', b'\n', ..]) => Some(i + 3),
            _ => None,
        }
    })
}

/// The head to send the daemon for a call that may hijack its connection and does not ask to
/// upgrade (`calls::hijackable`, no `Upgrade:`): the client's, with `Connection: close` for
/// any `Connection` header, so that a daemon answering without hijacking (an error) closes the
/// connection rather than take the client's further calls past the proxy. `None` for any
/// other request, or a head this does not read.
fn hijack_head(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.lines();
    let request_line = lines.next()?;
    let mut words = request_line.split(' ');
    let (method, target, version) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    if !hijackable(&method, target.split('?').next()?) {
        return None;
    }
    let mut out = format!("{request_line}\r\n");
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, _) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("upgrade") {
            return None;
        }
        if !name.eq_ignore_ascii_case("connection") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    Some(out.into_bytes())
}

/// Joins two connections byte for byte until both sides have closed (each side's end shuts
/// the other's writing down).
async fn join<A, B>(mut a: A, mut b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
        tracing::debug!("[proxy] stream: {e}");
    }
}

/// Answers one request.
async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
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
                Ok((c, d)) => join(TokioIo::new(c), TokioIo::new(d)).await,
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

/// `req`'s head with the JSON body `v`.
fn with_json(parts: hyper::http::request::Parts, v: &Value) -> Result<Request<Body>, ProxyError> {
    let out = serde_json::to_vec(v).map_err(|e| ProxyError::Failed(e.to_string()))?;
    Ok(with_body(parts, Bytes::from(out)))
}

/// Sends the request `parts` with the JSON body `v` on.
async fn forward_json(
    shared: &Shared,
    parts: hyper::http::request::Parts,
    v: &Value,
) -> Result<Response<Body>, ProxyError> {
    forward(shared, with_json(parts, v)?).await
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

/// `start` and `restart`: an old-style start's HostConfig rewritten, then answered once the
/// container is attached; a failed attach kills the container and answers 500.
async fn start(
    shared: &Shared,
    id: &str,
    req: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    // Held from before Docker starts it: its start event may come before Docker answers.
    let _call = shared.attacher.start_call(id);
    let req = start_host_config(shared, id, req).await?;
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

/// A start call with a JSON body (Docker API < 1.24) carries a HostConfig that replaces the
/// one create gave the container: for a container created through the proxy (its entrypoint
/// is weavewait), the `/w` bind and weftDNS go back in (`rewrite::rewrite_start`).
async fn start_host_config(
    shared: &Shared,
    id: &str,
    req: Request<Body>,
) -> Result<Request<Body>, ProxyError> {
    if !is_json(req.headers()) {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let bytes = read_body(body).await?;
    // Docker reads no HostConfig from a body of 7 bytes or less (`{}`, `null`); made longer,
    // one would replace the container's.
    if bytes.len() <= 7 {
        return Ok(with_body(parts, bytes));
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(with_body(parts, bytes));
    };
    let c = match shared.docker().await?.inspect(id).await {
        Ok(Some(c)) if c.entrypoint.first().map(String::as_str) == Some(rewrite::WAIT_BIN) => c,
        // Not the proxy's, or unknown: Docker answers for it.
        Ok(_) => return Ok(with_body(parts, bytes)),
        Err(e) => return Err(ProxyError::Failed(e.to_string())),
    };
    let wait_dir = shared
        .wait_dir
        .as_ref()
        .map_err(|e| ProxyError::Failed(e.clone()))?;
    // The router installs the three weavewait directories side by side.
    let (wait, noop) = (
        wait_dir.to_string_lossy(),
        wait_dir.with_file_name("w-noop"),
    );
    let dirs = WaitBinds {
        wait: &wait,
        noop: &noop.to_string_lossy(),
    };
    let named = rewrite::has_own_hostname(&c.id, &c.hostname, &c.domainname);
    if !rewrite::rewrite_start(&mut v, dirs, shared.dns.as_ref(), named) {
        return Ok(with_body(parts, bytes));
    }
    with_json(parts, &v)
}

/// Whether a request's body is JSON (`Content-Type: application/json`, parameters allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
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
#[path = "fake_daemon.rs"]
mod fake_daemon;

#[cfg(test)]
mod tests {
    use super::fake_daemon::{header, FakeDaemon, ID};
    use super::*;
    use tokio::net::UnixStream;

    fn shared(daemon: &FakeDaemon) -> Arc<Shared> {
        Arc::new(Shared {
            upstream: Upstream::Unix(daemon.socket.clone()),
            docker: tokio::sync::OnceCell::new(),
            wait_dir: Ok("/run/weft/weavewait/w".into()),
            rule: HostnameRule::default(),
            dns: Some(DnsSettings {
                server: "172.17.0.1".into(),
                domain: "weave.local.".into(),
            }),
            no_default_ipalloc: false,
            rewrite_inspect: false,
            attacher: Attacher::new(None, None, false, true, true, true),
        })
    }

    /// A client's connection, served by the proxy.
    fn client(daemon: &FakeDaemon) -> UnixStream {
        let (c, s) = UnixStream::pair().unwrap();
        tokio::spawn(serve_connection(s, shared(daemon)));
        c
    }

    /// `f`'s output, which must come within 10 s.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("nothing within 10 s")
    }

    /// Reads an answer's head.
    async fn answer_head(c: &mut UnixStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(within(c.read_u8()).await.unwrap());
        }
        String::from_utf8(head).unwrap()
    }

    /// `line` written comes back.
    async fn echoes(c: &mut UnixStream, line: &[u8]) {
        c.write_all(line).await.unwrap();
        let mut back = vec![0; line.len()];
        within(c.read_exact(&mut back)).await.unwrap();
        assert_eq!(back, line);
    }

    #[tokio::test]
    async fn hijack_without_upgrade_passes_both_ways() {
        let d = FakeDaemon::start("hijack");
        let mut c = client(&d);
        // stdin written right behind the head, as a client may.
        c.write_all(
            b"POST /v1.23/containers/old/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\n\
              Host: \r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\nearly\n",
        )
        .await
        .unwrap();
        let head = answer_head(&mut c).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(
            header(&head, "content-type"),
            Some("application/vnd.docker.raw-stream")
        );
        let mut early = [0; 6];
        within(c.read_exact(&mut early)).await.unwrap();
        assert_eq!(&early, b"early\n");
        for _ in 0..3 {
            echoes(&mut c, b"through stdin and back\n").await;
        }
        // The client's end of input ends the stream.
        c.shutdown().await.unwrap();
        let mut rest = Vec::new();
        within(c.read_to_end(&mut rest)).await.unwrap();
        assert!(rest.is_empty());
        let (sent, _) = &d.requests()[0];
        assert!(sent.starts_with("POST /v1.23/containers/old/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\nHost: \r\n"), "{sent}");
        assert_eq!(header(sent, "connection"), Some("close"));
        assert_eq!(sent.matches("onnection").count(), 1, "{sent}");
    }

    #[tokio::test]
    async fn upgraded_attach_still_joins_through_hyper() {
        let d = FakeDaemon::start("upgrade");
        let mut c = client(&d);
        c.write_all(
            b"POST /containers/old/attach?stream=1&stdin=1 HTTP/1.1\r\nHost: d\r\n\
              Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n",
        )
        .await
        .unwrap();
        let head = answer_head(&mut c).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        echoes(&mut c, b"upgraded\n").await;
        assert_eq!(header(&d.requests()[0].0, "upgrade"), Some("tcp"));
    }

    #[tokio::test]
    async fn old_style_start_gets_the_bind_and_dns_again() {
        let d = FakeDaemon::start("start");
        let mut c = client(&d);
        let body = br#"{"Dns":["8.8.8.8"],"PortBindings":{}}"#;
        let mut req = format!(
            "POST /v1.23/containers/{ID}/start HTTP/1.1\r\nHost: d\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        c.write_all(&req).await.unwrap();
        let head = answer_head(&mut c).await;
        assert!(head.starts_with("HTTP/1.1 204 "), "{head}");
        // A modern start on the same connection: hyper serves the calls after the first.
        c.write_all(
            format!("POST /containers/{ID}/start HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let head = answer_head(&mut c).await;
        assert!(head.starts_with("HTTP/1.1 204 "), "{head}");
        let starts: Vec<_> = d
            .requests()
            .into_iter()
            .filter(|(h, _)| h.starts_with("POST"))
            .collect();
        assert_eq!(starts.len(), 2);
        let v: Value = serde_json::from_slice(&starts[0].1).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "Dns": ["8.8.8.8", "172.17.0.1"],
                "DnsSearch": ["weave.local."],
                "PortBindings": {},
                "Binds": ["/run/weft/weavewait/w:/w:ro"],
            })
        );
        assert!(starts[1].1.is_empty());
    }

    #[test]
    fn heads_end_at_an_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\nrest", 0), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        assert_eq!(head_end(b"\r\n\r\n", 1), Some(4));
        assert_eq!(head_end(b"\r\n\r\n", 2), None);
    }

    #[test]
    fn hijacking_heads() {
        let h = hijack_head(
            b"POST /v1.20/exec/e1/start HTTP/1.1\r\nHost: /var/run/docker.sock\r\n\
              Connection: keep-alive\r\nContent-Length: 2\r\n\r\n",
        );
        assert_eq!(
            String::from_utf8(h.unwrap()).unwrap(),
            "POST /v1.20/exec/e1/start HTTP/1.1\r\nHost: /var/run/docker.sock\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n"
        );
        for other in [
            &b"POST /containers/c/attach HTTP/1.1\r\nUpgrade: tcp\r\n\r\n"[..],
            b"GET /containers/c/attach HTTP/1.1\r\n\r\n",
            b"POST /containers/c/start HTTP/1.1\r\n\r\n",
            b"POST /containers/c/attach HTTP/2\r\n\r\n",
            b"POST /containers/c/attach HTTP/1.1\r\nbad header\r\n\r\n",
            b"POST /containers/c/attach\xff HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                hijack_head(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn json_bodies() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(is_json(&h));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&h));
    }

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
