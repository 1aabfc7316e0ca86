//! The proxy's TLS (Weave Net's `--tls`, `--tlsverify`, `--tlscacert`, `--tlscert`,
//! `--tlskey`): the settings, the acceptor built from the certificate files when the proxy
//! starts, and the TLS flags of the running Docker daemon, which a launch copies unless
//! `--no-detect-tls` (Weave's `weaveutil docker-tls-args`).
//!
//! Only TCP listeners use TLS; Unix ones stay plain, as Docker's do. `--tls` alone asks
//! nothing of clients; `--tlsverify` wants a client certificate signed by `--tlscacert`.
//! rustls speaks TLS 1.2 and 1.3 only, where Weave Net also accepted 1.0 and 1.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The CA file's name in the default directory.
pub const CA_FILE: &str = "ca.pem";
/// The certificate file's name in the default directory.
pub const CERT_FILE: &str = "cert.pem";
/// The key file's name in the default directory.
pub const KEY_FILE: &str = "key.pem";

/// TLS on the proxy's TCP listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `--tlsverify`: clients must show a certificate signed by `cacert`.
    pub verify: bool,
    /// `--tlscacert` (read only with `verify`).
    pub cacert: PathBuf,
    /// `--tlscert`: the server's certificate chain.
    pub cert: PathBuf,
    /// `--tlskey`: its private key.
    pub key: PathBuf,
}

impl TlsSettings {
    /// The settings for `--tls`/`--tlsverify` with these paths; an empty one is its file in
    /// [`default_cert_dir`].
    pub fn new(verify: bool, cacert: &str, cert: &str, key: &str) -> Self {
        let dir = std::cell::OnceCell::new();
        let path = |given: &str, file: &str| {
            if given.is_empty() {
                dir.get_or_init(default_cert_dir).join(file)
            } else {
                PathBuf::from(given)
            }
        };
        Self {
            verify,
            cacert: path(cacert, CA_FILE),
            cert: path(cert, CERT_FILE),
            key: path(key, KEY_FILE),
        }
    }

    /// Reads the files and builds the acceptor; the error is one line naming the flag and
    /// the file.
    pub(super) fn acceptor(&self) -> Result<TlsAcceptor, String> {
        // The provider is named rather than taken from the process default, which would be
        // ambiguous should another crate in the build enable a second one.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = read_certs("--tlscert", &self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| file_error("--tlskey", &self.key, &pem_error(e, "private key")))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("proxy TLS: {e}"))?;
        let builder = if self.verify {
            let mut roots = RootCertStore::empty();
            for c in read_certs("--tlscacert", &self.cacert)? {
                roots
                    .add(c)
                    .map_err(|e| file_error("--tlscacert", &self.cacert, &e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| file_error("--tlscacert", &self.cacert, &e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut cfg = builder.with_single_cert(certs, key).map_err(|e| {
            format!(
                "cannot use --tlscert {} with --tlskey {}: {e}",
                self.cert.display(),
                self.key.display()
            )
        })?;
        // As Weave Net's proxy: HTTP/1.1 is all it serves.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(cfg)))
    }
}

/// Where the certificate files are by default: `$DOCKER_CERT_PATH`, else `~/.docker`, as the
/// docker CLI and daemon look.
pub fn default_cert_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("DOCKER_CERT_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        })
        .unwrap_or_else(|| PathBuf::from("/"));
    home.join(".docker")
}

/// Every certificate in the PEM file `path`, at least one.
fn read_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| file_error(flag, path, &pem_error(e, "certificate")))?;
    if certs.is_empty() {
        return Err(file_error(flag, path, "no certificate in it"));
    }
    Ok(certs)
}

fn pem_error(e: rustls::pki_types::pem::Error, what: &str) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("no {what} in it (an encrypted key must be decrypted first)")
        }
        e => format!("not PEM: {e}"),
    }
}

fn file_error(flag: &str, path: &Path, e: &str) -> String {
    format!("cannot load {flag} {}: {e}", path.display())
}

/// The TLS flags on a Docker daemon's command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonTls {
    /// `--tls`.
    pub tls: bool,
    /// `--tlsverify`.
    pub tlsverify: bool,
    /// `--tlscacert`.
    pub tlscacert: Option<String>,
    /// `--tlscert`.
    pub tlscert: Option<String>,
    /// `--tlskey`.
    pub tlskey: Option<String>,
}

/// The TLS flags of process `comm` with command line `args` (without its `argv[0]`), or
/// `None` when it is no Docker daemon: `dockerd`, or `docker` run as `docker daemon` or
/// `docker -d` (before Docker 1.12).
pub fn daemon_tls(comm: &str, args: &[&str]) -> Option<DaemonTls> {
    // The old client binary ran the daemon as `docker daemon …` or `docker -d …`: only its
    // first word says so (`docker run img daemon` is no daemon).
    let daemon = comm == "dockerd"
        || (comm == "docker" && matches!(args.first().copied(), Some("-d" | "daemon")));
    if !daemon {
        return None;
    }
    let mut t = DaemonTls::default();
    let mut it = args.iter().copied().peekable();
    while let Some(arg) = it.next() {
        // Docker 1.x's flag package took one dash as well as two.
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        match name {
            "tls" | "tlsverify" => {
                // A value only as `--tls=false`: Go's boolean flags take no separate one.
                let on = inline.map_or(Some(true), go_bool);
                if let Some(on) = on {
                    if name == "tls" {
                        t.tls = on;
                    } else {
                        t.tlsverify = on;
                    }
                }
            }
            "tlscacert" | "tlscert" | "tlskey" => {
                let value = match inline {
                    Some(v) => Some(v.to_string()),
                    None => it.next_if(|v| !v.starts_with('-')).map(str::to_string),
                };
                let slot = match name {
                    "tlscacert" => &mut t.tlscacert,
                    "tlscert" => &mut t.tlscert,
                    _ => &mut t.tlskey,
                };
                if value.is_some() {
                    *slot = value;
                }
            }
            _ => {}
        }
    }
    Some(t)
}

/// Go's `strconv.ParseBool`.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The TLS flags of the first Docker daemon among the processes under `proc_root` (lowest
/// PID first), relative paths made absolute against the daemon's working directory; `None`
/// when there is none. What cannot be read (another user's process, one that just exited)
/// is skipped.
pub fn detect_daemon_tls(proc_root: &Path) -> Option<DaemonTls> {
    let mut pids: Vec<u32> = std::fs::read_dir(proc_root)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter().find_map(|pid| {
        let dir = proc_root.join(pid.to_string());
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        let args: Vec<&str> = cmdline
            .split('\0')
            .skip(1)
            .filter(|a| !a.is_empty())
            .collect();
        let mut t = daemon_tls(comm.trim_end_matches('\n'), &args)?;
        if let Ok(cwd) = std::fs::read_link(dir.join("cwd")) {
            for p in [&mut t.tlscacert, &mut t.tlscert, &mut t.tlskey]
                .into_iter()
                .flatten()
            {
                if Path::new(p.as_str()).is_relative() {
                    *p = cwd.join(&*p).to_string_lossy().into_owned();
                }
            }
        }
        Some(t)
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };

    /// A CA, a server certificate for 127.0.0.1 signed by it, a client certificate signed by
    /// it and one signed by another CA, written as PEM files into `dir`.
    pub(crate) struct TestCerts {
        pub(crate) dir: PathBuf,
    }

    impl TestCerts {
        pub(crate) fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("weft-tls-test-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let (ca, ca_key) = new_ca("weft test CA");
            let (other, other_key) = new_ca("another CA");
            let leaf = |names: Vec<String>, usage, issuer, issuer_key| {
                let key = KeyPair::generate().unwrap();
                let mut p = CertificateParams::new(names).unwrap();
                p.extended_key_usages = vec![usage];
                let cert = p.signed_by(&key, issuer, issuer_key).unwrap();
                (cert.pem(), key.serialize_pem())
            };
            let server = leaf(
                vec!["127.0.0.1".into()],
                ExtendedKeyUsagePurpose::ServerAuth,
                &ca,
                &ca_key,
            );
            let client = leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, &ca, &ca_key);
            let stranger = leaf(
                vec![],
                ExtendedKeyUsagePurpose::ClientAuth,
                &other,
                &other_key,
            );
            for (f, text) in [
                (CA_FILE, ca.pem()),
                (CERT_FILE, server.0),
                (KEY_FILE, server.1),
                ("client-cert.pem", client.0),
                ("client-key.pem", client.1),
                ("stranger-cert.pem", stranger.0),
                ("stranger-key.pem", stranger.1),
            ] {
                std::fs::write(dir.join(f), text).unwrap();
            }
            Self { dir }
        }

        pub(crate) fn settings(&self, verify: bool) -> TlsSettings {
            let p = |f: &str| self.dir.join(f).to_string_lossy().into_owned();
            TlsSettings::new(verify, &p(CA_FILE), &p(CERT_FILE), &p(KEY_FILE))
        }

        /// A client trusting the CA, showing the certificate `who` (`client`, `stranger`) or
        /// none.
        pub(crate) fn connector(&self, who: Option<&str>) -> tokio_rustls::TlsConnector {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_file(self.dir.join(CA_FILE)).unwrap())
                .unwrap();
            let b = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
            let cfg = match who {
                None => b.with_no_client_auth(),
                Some(w) => b
                    .with_client_auth_cert(
                        vec![
                            CertificateDer::from_pem_file(self.dir.join(format!("{w}-cert.pem")))
                                .unwrap(),
                        ],
                        PrivateKeyDer::from_pem_file(self.dir.join(format!("{w}-key.pem")))
                            .unwrap(),
                    )
                    .unwrap(),
            };
            tokio_rustls::TlsConnector::from(Arc::new(cfg))
        }
    }

    impl Drop for TestCerts {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn new_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (p.self_signed(&key).unwrap(), key)
    }

    #[test]
    fn default_paths() {
        let s = TlsSettings::new(true, "/a/ca", "", "");
        assert_eq!(s.cacert, Path::new("/a/ca"));
        assert_eq!(s.cert, default_cert_dir().join(CERT_FILE));
        assert_eq!(s.key, default_cert_dir().join(KEY_FILE));
        assert!(default_cert_dir().is_absolute());
    }

    #[test]
    fn bad_files_are_one_line_naming_flag_and_file() {
        let c = TestCerts::new("bad");
        let f = |n: &str| c.dir.join(n);
        std::fs::write(f("junk.pem"), "not a pem file\n").unwrap();
        std::fs::write(
            f("broken.pem"),
            "-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let with = |ca: &str, cert: &str, key: &str| TlsSettings {
            verify: true,
            cacert: f(ca),
            cert: f(cert),
            key: f(key),
        };
        for (s, want) in [
            (
                with(CA_FILE, "missing.pem", KEY_FILE),
                format!("cannot load --tlscert {}: ", f("missing.pem").display()),
            ),
            (
                with(CA_FILE, "junk.pem", KEY_FILE),
                format!(
                    "cannot load --tlscert {}: no certificate",
                    f("junk.pem").display()
                ),
            ),
            (
                with(CA_FILE, "broken.pem", KEY_FILE),
                format!(
                    "cannot load --tlscert {}: not PEM",
                    f("broken.pem").display()
                ),
            ),
            (
                with(CA_FILE, CERT_FILE, CERT_FILE),
                format!(
                    "cannot load --tlskey {}: no private key",
                    f(CERT_FILE).display()
                ),
            ),
            (
                with("missing.pem", CERT_FILE, KEY_FILE),
                format!("cannot load --tlscacert {}: ", f("missing.pem").display()),
            ),
            (
                with(CA_FILE, CERT_FILE, "client-key.pem"),
                format!("cannot use --tlscert {}", f(CERT_FILE).display()),
            ),
        ] {
            let e = s.acceptor().map(|_| ()).unwrap_err();
            assert!(e.starts_with(&want), "{e:?} does not start with {want:?}");
            assert!(!e.contains('\n'), "{e:?}");
        }
        // Without --tlsverify the CA is not read.
        let mut s = with("missing.pem", CERT_FILE, KEY_FILE);
        s.verify = false;
        assert!(s.acceptor().is_ok());
        assert!(c.settings(true).acceptor().is_ok());
    }

    /// Whether a handshake with `acceptor` by a client showing `who` succeeds on the server's
    /// side.
    async fn handshake(c: &TestCerts, acceptor: TlsAcceptor, who: Option<&str>) -> bool {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let connector = c.connector(who);
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let client = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let Ok(mut s) = connector.connect(name, client_io).await else {
                return;
            };
            let _ = s.write_all(b"ping").await;
            let _ = s.flush().await;
            let _ = s.read(&mut [0; 1]).await;
        });
        let ok = async {
            use tokio::io::AsyncReadExt as _;
            let mut s = acceptor.accept(server_io).await.ok()?;
            let mut b = [0; 4];
            s.read_exact(&mut b).await.ok()?;
            Some(b == *b"ping")
        }
        .await
        .unwrap_or(false);
        client.abort();
        ok
    }

    #[tokio::test]
    async fn handshakes() {
        let c = TestCerts::new("handshake");
        let verify = c.settings(true).acceptor().unwrap();
        assert!(handshake(&c, verify.clone(), Some("client")).await);
        assert!(!handshake(&c, verify.clone(), None).await);
        assert!(!handshake(&c, verify, Some("stranger")).await);
        let tls = c.settings(false).acceptor().unwrap();
        assert!(handshake(&c, tls.clone(), None).await);
        assert!(handshake(&c, tls, Some("stranger")).await);
    }

    #[test]
    fn daemon_command_lines() {
        assert_eq!(
            daemon_tls("dockerd", &["-H", "fd://", "--containerd=/run/c.sock"]),
            Some(DaemonTls::default())
        );
        assert_eq!(
            daemon_tls(
                "dockerd",
                &[
                    "--tlsverify",
                    "--tlscacert=/etc/docker/ca.pem",
                    "--tlscert",
                    "/etc/docker/cert.pem",
                    "--tlskey",
                    "/etc/docker/key.pem",
                    "-H=tcp://0.0.0.0:2376",
                ]
            ),
            Some(DaemonTls {
                tls: false,
                tlsverify: true,
                tlscacert: Some("/etc/docker/ca.pem".into()),
                tlscert: Some("/etc/docker/cert.pem".into()),
                tlskey: Some("/etc/docker/key.pem".into()),
            })
        );
        // Docker before 1.12: `docker daemon` or `docker -d`, one dash or two.
        assert_eq!(
            daemon_tls("docker", &["daemon", "-tls", "--tlskey=k.pem"]),
            Some(DaemonTls {
                tls: true,
                tlskey: Some("k.pem".into()),
                ..DaemonTls::default()
            })
        );
        assert_eq!(
            daemon_tls("docker", &["-d", "--tls=false", "--tlsverify=1"]),
            Some(DaemonTls {
                tlsverify: true,
                ..DaemonTls::default()
            })
        );
        // A client, another program, a flag without its value.
        assert_eq!(daemon_tls("docker", &["--tls", "ps"]), None);
        assert_eq!(daemon_tls("containerd", &["--tls"]), None);
        assert_eq!(
            daemon_tls("dockerd", &["--tlscert", "--tls"]),
            Some(DaemonTls {
                tls: true,
                ..DaemonTls::default()
            })
        );
    }

    #[test]
    fn proc_scan() {
        let root = std::env::temp_dir().join(format!("weft-proc-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let proc = |pid: &str, comm: Option<&str>, cmdline: &[&str]| {
            let d = root.join(pid);
            std::fs::create_dir_all(&d).unwrap();
            if let Some(c) = comm {
                std::fs::write(d.join("comm"), format!("{c}\n")).unwrap();
            }
            let mut b = cmdline.join("\0");
            b.push('\0');
            std::fs::write(d.join("cmdline"), b).unwrap();
            d
        };
        assert_eq!(detect_daemon_tls(&root), None);
        // Unreadable (no comm), not a daemon, a client: skipped.
        proc("1", None, &["/sbin/init"]);
        proc("12", Some("sshd"), &["sshd", "--tls"]);
        proc("30", Some("docker"), &["docker", "--tlsverify", "ps"]);
        std::fs::create_dir_all(root.join("self")).unwrap();
        assert_eq!(detect_daemon_tls(&root), None);
        // The lowest PID wins (100 before 99 as text, not as a number); a relative path
        // joins the daemon's working directory.
        let d = proc(
            "99",
            Some("dockerd"),
            &["/usr/bin/dockerd", "--tls", "--tlscert", "certs/c.pem"],
        );
        std::os::unix::fs::symlink("/etc/docker", d.join("cwd")).unwrap();
        proc("100", Some("dockerd"), &["dockerd", "--tlsverify"]);
        assert_eq!(
            detect_daemon_tls(&root),
            Some(DaemonTls {
                tls: true,
                tlscert: Some("/etc/docker/certs/c.pem".into()),
                ..DaemonTls::default()
            })
        );
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(detect_daemon_tls(&root), None);
    }
}
