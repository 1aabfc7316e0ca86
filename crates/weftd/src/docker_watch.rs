//! Following the Docker daemon (unless `--no-docker`): its container events go to the tasks
//! that keep per-container state. A container that dies loses its DNS names at once (Weave's
//! `die` handling) and its addresses after IPAM's grace period unless it starts again; one
//! that is destroyed loses its addresses at once.
//!
//! A container that starts on a network of the Docker plugin gets its names registered in
//! weftDNS (see `plugin::watch`); one the Docker API proxy handles is attached (see
//! `proxy::Attacher`).
//!
//! A daemon that is not there, or goes away, is looked for again every few seconds; nothing
//! else waits for it. On each (re)connect, and when a part starts, the running containers are
//! given to the parts as started (`Listeners::catch_up`): this is how the proxy attaches the
//! containers that were already running.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use weft_docker::{Docker, Event};

use crate::channel_link::{is_docker_id, unix_now};
use crate::{dns, docker_parts, ipam, plugin};

/// How long to wait before looking for the daemon again.
const RETRY: Duration = Duration::from_secs(3);

/// The tasks that hear of container events.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    /// The IPAM task, when IPAM is on.
    pub ipam: Option<ipam::task::Handle>,
    /// The DNS task, when DNS is on.
    pub dns: Option<dns::task::Handle>,
    /// The plugin and the proxy, while they run: containers started on the plugin's networks
    /// get their names registered, and those the proxy handles are attached when they start.
    pub parts: Option<docker_parts::Parts>,
    /// Which names the plugin registered, for containers that leave one of its networks.
    pub(crate) plugin_names: plugin::watch::Registered,
}

/// Where an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The daemon's event stream.
    Live,
    /// What [`Listeners::catch_up`] concluded: nothing just started, so a failed attach of the
    /// proxy's only warns.
    CatchUp,
}

impl Listeners {
    async fn tell(&self, docker: &Docker, event: Event, source: Source) {
        let attacher = self.parts.as_ref().and_then(docker_parts::Parts::attacher);
        if let (Some(a), Event::Started(id)) = (attacher, &event) {
            let (docker, id) = (docker.clone(), id.clone());
            tokio::spawn(async move {
                match source {
                    Source::Live => a.on_started(&docker, &id).await,
                    Source::CatchUp => a.attach_running(&docker, &id).await,
                }
            });
        }
        let networks = self
            .parts
            .as_ref()
            .and_then(docker_parts::Parts::plugin_networks);
        if let Some(n) = &networks {
            let (names, dns) = (&self.plugin_names, self.dns.as_ref());
            match &event {
                Event::Started(id) => {
                    plugin::watch::container_started(docker, id, None, n, names, dns).await;
                }
                Event::Connected { container, network } => {
                    let only = Some(network.as_str());
                    plugin::watch::container_started(docker, container, only, n, names, dns).await;
                }
                Event::Disconnected { container, network } => {
                    plugin::watch::disconnected(container, network, names, dns).await;
                }
                Event::Died(id) | Event::Destroyed(id) => names.container_gone(id),
            }
        }
        if let Some(i) = &self.ipam {
            i.container_event(event.clone()).await;
        }
        if let (Some(d), Event::Died(id)) = (&self.dns, &event) {
            d.container_died(id.clone()).await;
        }
    }
}

impl Listeners {
    /// After (re)connecting: what happened while the daemon was not followed. A daemon that
    /// restarts closes its API before it stops its containers and starts those with a restart
    /// policy before its API is back, so their `die` and `start` never come. Containers that
    /// own addresses or names but no longer run died; every running one started (attaching
    /// and registering what is already attached and registered changes nothing).
    async fn catch_up(&self, docker: &Docker, known: BTreeSet<String>, running: Vec<String>) {
        let running: BTreeSet<String> = running.into_iter().collect();
        for id in known {
            if is_docker_id(&id) && !running.contains(&id) {
                self.tell(docker, Event::Died(id), Source::CatchUp).await;
            }
        }
        for id in running {
            self.tell(docker, Event::Started(id), Source::CatchUp).await;
        }
    }

    /// The containers that own addresses or names. Taken before the daemon's list of running
    /// ones: a container attached in between is then in the list, not taken for dead.
    async fn known(&self) -> BTreeSet<String> {
        let mut known = BTreeSet::new();
        if let Some(i) = &self.ipam {
            known.extend(i.owners().await.unwrap_or_default());
        }
        if let Some(d) = &self.dns {
            known.extend(d.containers().await.unwrap_or_default());
        }
        known
    }
}

/// Follows the daemon at `DOCKER_HOST` for as long as the router runs.
pub fn spawn(listeners: Listeners) {
    tokio::spawn(async move {
        let mut said = false;
        loop {
            match follow(&listeners).await {
                Ok(()) => tracing::info!("[docker] the daemon's event stream ended"),
                Err(e) if !said => {
                    tracing::info!("[docker] {e}; looking again every {RETRY:?}");
                    said = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(RETRY).await;
        }
    });
}

async fn follow(listeners: &Listeners) -> Result<(), weft_docker::DockerError> {
    let docker = Docker::from_env()?.negotiate().await?;
    tracing::info!("[docker] following container events");
    // The stream is read from now on by a task of its own, into a bounded queue, while the
    // catch-up runs: the daemon keeps only its last few hundred events to replay. It starts a
    // second before the list is taken, so that nothing happening in between is missed; what
    // comes twice is a no-op to every listener.
    let (tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let reader = docker.clone();
    let since = unix_now() - 1;
    let _reading = AbortOnDrop(tokio::spawn(async move {
        let mut stream = std::pin::pin!(reader.events(Some(since)));
        while let Some(e) = stream.next().await {
            if tx.send(e).await.is_err() {
                return;
            }
        }
    }));
    // A part started from now on (`launch-proxy`, `launch-plugin`) gets the running
    // containers as started, as the catch-up gives them to the parts running already.
    let mut started = listeners.parts.as_ref().map(docker_parts::Parts::started);
    if let Some(s) = &mut started {
        s.borrow_and_update();
    }
    let known = listeners.known().await;
    let running = docker.running_ids().await?;
    listeners.catch_up(&docker, known, running).await;
    loop {
        tokio::select! {
            e = events.recv() => {
                let Some(e) = e else { return Ok(()) };
                let e = e?;
                tracing::debug!("[docker] {e:?}");
                listeners.tell(&docker, e, Source::Live).await;
            }
            Some(()) = part_started(&mut started) => {
                let running = docker.running_ids().await?;
                listeners.catch_up(&docker, BTreeSet::new(), running).await;
            }
        }
    }
}

/// Once a part starts; never without parts (or once their owner has gone).
async fn part_started(started: &mut Option<tokio::sync::watch::Receiver<u64>>) -> Option<()> {
    match started {
        Some(s) => s.changed().await.ok(),
        None => std::future::pending().await,
    }
}

/// Events read ahead of the listeners.
const EVENT_QUEUE: usize = 1024;

/// Ends a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
