//! The router's Docker-facing parts: the legacy network plugin and the Docker API proxy.
//! `weft launch` starts them with the router. Weave Net 1.x ran each in a container of its
//! own, started by `launch-router`, `launch-proxy` and `launch-plugin` and stopped by
//! `stop-proxy` and `stop-plugin`; here they run in the router's process, so those commands
//! start and stop them through the control API (`POST`/`DELETE /proxy` and `/plugin`) while
//! the router keeps running.
//!
//! One async lock orders starts and stops; what runs sits behind a plain lock that readers —
//! the Docker event follower, `weft status`, `weft report` and `GET /proxyaddrs` — hold only
//! to copy what they need, so they never wait for a start or a stop. Each start is announced
//! ([`Parts::started`]) so that the event follower treats the containers already running as
//! just started for the new part.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::error::RequestError;
use crate::{dns, ipam, plugin, proxy, StartError};

/// The parts of one router; cheap to clone.
#[derive(Debug, Clone)]
pub struct Parts {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ipam: Option<ipam::task::Handle>,
    dns: Option<dns::task::Handle>,
    run_dir: PathBuf,
    docker: bool,
    /// Held across a start or a stop.
    order: tokio::sync::Mutex<()>,
    running: Mutex<Running>,
    /// Counts the starts.
    started: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Running {
    plugin: Option<plugin::Plugin>,
    proxy: Option<proxy::Proxy>,
}

impl Parts {
    /// No parts running yet, for a router with these tasks; `docker`: the router may talk to
    /// a Docker daemon (the proxy needs one).
    pub fn new(
        ipam: Option<ipam::task::Handle>,
        dns: Option<dns::task::Handle>,
        run_dir: PathBuf,
        docker: bool,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                ipam,
                dns,
                run_dir,
                docker,
                order: tokio::sync::Mutex::new(()),
                running: Mutex::new(Running::default()),
                started: watch::Sender::new(0),
            }),
        }
    }

    fn running(&self) -> MutexGuard<'_, Running> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes with every start of a part.
    pub fn started(&self) -> watch::Receiver<u64> {
        self.inner.started.subscribe()
    }

    fn announce_start(&self) {
        self.inner.started.send_modify(|n| *n += 1);
    }

    /// Starts the plugin.
    pub async fn start_plugin(&self, cfg: plugin::PluginConfig) -> Result<(), PartError> {
        let _order = self.inner.order.lock().await;
        if self.running().plugin.is_some() {
            return Err(PartError::Running(Part::Plugin));
        }
        let p = plugin::Plugin::start(cfg, self.inner.ipam.clone(), self.inner.docker)?;
        self.running().plugin = Some(p);
        self.announce_start();
        Ok(())
    }

    /// Stops the plugin (removing the network `weave` it made, then its sockets); returns
    /// Weave Net's warning when containers still attached keep the network there.
    pub async fn stop_plugin(&self) -> Result<Option<String>, PartError> {
        let _order = self.inner.order.lock().await;
        let p = self.running().plugin.take();
        let p = p.ok_or(PartError::NotRunning(Part::Plugin))?;
        Ok(p.stop().await)
    }

    /// Starts the proxy.
    pub async fn start_proxy(&self, cfg: proxy::ProxyConfig) -> Result<(), PartError> {
        if !self.inner.docker {
            return Err(PartError::NoDocker);
        }
        let _order = self.inner.order.lock().await;
        if self.running().proxy.is_some() {
            return Err(PartError::Running(Part::Proxy));
        }
        let p = proxy::Proxy::start(
            cfg,
            &self.inner.run_dir,
            self.inner.ipam.clone(),
            self.inner.dns.clone(),
        )?;
        self.running().proxy = Some(p);
        self.announce_start();
        Ok(())
    }

    /// Stops the proxy (removing its socket and links).
    pub async fn stop_proxy(&self) -> Result<(), PartError> {
        let _order = self.inner.order.lock().await;
        let p = self.running().proxy.take();
        p.ok_or(PartError::NotRunning(Part::Proxy))?.stop();
        Ok(())
    }

    /// Stops whatever runs: the router is going.
    pub async fn stop_all(&self) {
        let _ = self.stop_proxy().await;
        let _ = self.stop_plugin().await;
    }

    /// The plugin's networks, while it runs.
    pub fn plugin_networks(&self) -> Option<plugin::Networks> {
        self.running().plugin.as_ref().map(|p| p.networks.clone())
    }

    /// The proxy's attacher, while it runs.
    pub fn attacher(&self) -> Option<proxy::Attacher> {
        self.running().proxy.as_ref().map(|p| p.attacher.clone())
    }

    /// The proxy's addresses; none while it is stopped.
    pub fn proxy_addrs(&self) -> Vec<String> {
        self.running()
            .proxy
            .as_ref()
            .map(proxy::Proxy::addresses)
            .unwrap_or_default()
    }

    /// The `Service: proxy` and `Service: plugin (legacy)` sections of `weft status`, for
    /// what runs.
    pub fn render_sections(&self) -> String {
        let running = self.running();
        let mut out = String::new();
        if let Some(p) = &running.proxy {
            out.push_str(&proxy::render_section(&p.addresses()));
        }
        if running.plugin.is_some() {
            out.push_str(&plugin::render_section(plugin::GLOBAL_DRIVER));
        }
        out
    }

    /// The report's `Proxy` and `Plugin` members, for what runs (Weave Net omits a part that
    /// does not run).
    pub fn report(&self) -> Vec<(&'static str, Value)> {
        let running = self.running();
        let mut out = Vec::new();
        if let Some(p) = &running.proxy {
            out.push(("Proxy", json!({ "Addresses": p.addresses() })));
        }
        if let Some(p) = &running.plugin {
            let subnet = self.inner.ipam.as_ref().map(|h| h.default_subnet);
            out.push((
                "Plugin",
                plugin::report(p.config(), self.inner.dns.is_some(), subnet),
            ));
        }
        out
    }
}

/// A part's name, as messages give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The legacy Docker network plugin.
    Plugin,
    /// The Docker API proxy.
    Proxy,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plugin => "plugin",
            Self::Proxy => "proxy",
        })
    }
}

/// Why a part did not start or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartError {
    /// It runs already.
    #[error("the {0} is already running")]
    Running(Part),
    /// It is not running.
    #[error("the {0} is not running")]
    NotRunning(Part),
    /// The router was launched with `--no-docker`.
    #[error("the router was launched with --no-docker, so it runs no Docker API proxy")]
    NoDocker,
    /// Its configuration was refused.
    #[error("{0}")]
    Config(String),
    /// It could not start (a socket that cannot be bound, ...).
    #[error(transparent)]
    Start(#[from] StartError),
}

impl From<PartError> for RequestError {
    fn from(e: PartError) -> Self {
        Self::Part(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parts_start_and_stop_while_the_router_runs() {
        let dir = std::env::temp_dir().join(format!("weft-parts-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plugin_cfg = plugin::PluginConfig {
            dir: dir.join("plugins"),
            multicast: true,
        };
        let parts = Parts::new(None, None, dir.clone(), true);
        assert_eq!(parts.render_sections(), "");
        assert!(parts.report().is_empty());

        parts.start_plugin(plugin_cfg.clone()).await.unwrap();
        assert!(matches!(
            parts.start_plugin(plugin_cfg.clone()).await,
            Err(PartError::Running(Part::Plugin))
        ));
        assert!(parts.plugin_networks().is_some());
        assert!(plugin_cfg.socket(plugin::MESH_DRIVER).exists());

        let flags = proxy::ProxyFlags {
            upstream: format!("unix://{}", dir.join("no-docker.sock").display()),
            ..proxy::ProxyFlags::default()
        };
        let cfg = proxy::ProxyConfig::from_flags(&flags).unwrap();
        parts.start_proxy(cfg.clone()).await.unwrap();
        assert!(matches!(
            parts.start_proxy(cfg.clone()).await,
            Err(PartError::Running(Part::Proxy))
        ));
        let sock = dir.join(proxy::SOCKET);
        assert!(sock.exists());
        assert_eq!(parts.proxy_addrs(), [format!("unix://{}", sock.display())]);
        assert!(parts.attacher().is_some());
        let sections = parts.render_sections();
        assert!(sections.contains("        Service: proxy\n        Address: unix://"));
        assert!(sections.contains("        Service: plugin (legacy)\n"));
        let report: Vec<&str> = parts.report().iter().map(|(k, _)| *k).collect();
        assert_eq!(report, ["Proxy", "Plugin"]);

        parts.stop_proxy().await.unwrap();
        assert!(!sock.exists());
        assert!(parts.proxy_addrs().is_empty() && parts.attacher().is_none());
        assert!(matches!(
            parts.stop_proxy().await,
            Err(PartError::NotRunning(Part::Proxy))
        ));
        // Started again after a stop.
        parts.start_proxy(cfg).await.unwrap();
        parts.stop_all().await;
        assert!(!sock.exists());
        assert!(!plugin_cfg.socket(plugin::MESH_DRIVER).exists());
        assert!(parts.plugin_networks().is_none());
        assert!(matches!(
            parts.stop_plugin().await,
            Err(PartError::NotRunning(Part::Plugin))
        ));

        // Without Docker there is no proxy.
        let no_docker = Parts::new(None, None, dir.clone(), false);
        let cfg = proxy::ProxyConfig::from_flags(&proxy::ProxyFlags::default()).unwrap();
        assert!(matches!(
            no_docker.start_proxy(cfg).await,
            Err(PartError::NoDocker)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
