//! A fake Docker daemon of the old kind, for the proxy's tests: on a Unix socket in a directory
//! of its own, one request per connection, it answers `/version`, the inspect of container
//! [`ID`] (created through the proxy: weavewait's entrypoint, `WEAVE_CIDR=none` so that no
//! attach follows), `start` with 204, and `attach` by hijacking the connection — `200 OK` with
//! a raw stream when asked without `Upgrade:`, `101` with it — then echoing what the client
//! writes until the client stops writing. It records every request's head and body.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// The container it knows.
pub(super) const ID: &str = "0123456789ab0123456789ab0123456789ab0123456789ab0123456789abcdef";

/// A request it got: its head and its body.
pub(super) type Recorded = (String, Vec<u8>);

/// The running fake daemon; stops and removes its directory when dropped.
pub(super) struct FakeDaemon {
    dir: PathBuf,
    /// Its socket.
    pub(super) socket: PathBuf,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl FakeDaemon {
    /// Listens in a new directory named after `tag` (in a Tokio runtime).
    pub(super) fn start(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("weft-fake-dockerd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("docker.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, log.clone()));
            }
        });
        Self {
            dir,
            socket,
            requests,
            task,
        }
    }

    /// The requests so far, in the order they came.
    pub(super) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads a request head and the body its `Content-Length` gives; returns them and what came
/// after. `None` if the connection closed first.
async fn read_request(s: &mut UnixStream) -> Option<(String, Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if s.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len = header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
    while buf.len() < end + len {
        if s.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
    }
    let rest = buf.split_off(end + len);
    Some((head, buf.split_off(end), rest))
}

/// The value of header `name` (lower case) in `head`.
pub(super) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn serve(mut s: UnixStream, log: Arc<Mutex<Vec<Recorded>>>) {
    let Some((head, body, rest)) = read_request(&mut s).await else {
        return;
    };
    log.lock().unwrap().push((head.clone(), body));
    let mut words = head.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method == "POST" && path.ends_with("/attach") {
        let status = if header(&head, "upgrade").is_some() {
            "101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp"
        } else {
            "200 OK"
        };
        let answer =
            format!("HTTP/1.1 {status}\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n");
        if s.write_all(answer.as_bytes()).await.is_err() || s.write_all(&rest).await.is_err() {
            return;
        }
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
        return;
    }
    let (status, json) = if path.ends_with("/version") {
        (
            "200 OK",
            r#"{"ApiVersion":"1.41","Version":"20.10.0"}"#.to_string(),
        )
    } else if path.ends_with(&format!("/containers/{ID}/json")) {
        ("200 OK", inspect())
    } else if method == "POST" && path.ends_with("/start") {
        ("204 No Content", String::new())
    } else {
        (
            "404 Not Found",
            r#"{"message":"page not found"}"#.to_string(),
        )
    };
    let length = if json.is_empty() {
        String::new()
    } else {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            json.len()
        )
    };
    let _ = s
        .write_all(format!("HTTP/1.1 {status}\r\n{length}\r\n{json}").as_bytes())
        .await;
}

/// Container [`ID`] as Docker shows it: created through the proxy, left without an attach.
fn inspect() -> String {
    serde_json::json!({
        "Id": ID,
        "Name": "/old",
        "State": {"Running": true, "Pid": 0},
        "Config": {
            "Hostname": &ID[..12],
            "Domainname": "",
            "Entrypoint": ["/w/w", "cat"],
            "Env": ["WEAVE_CIDR=none"],
        },
        "HostConfig": {"NetworkMode": "default"},
        "Mounts": [],
    })
    .to_string()
}
