//! weavewait (`/w/w`): the first process of a container created through weft's Docker API
//! proxy. It waits until the router has attached the container — `ethwe` exists and is up and,
//! unless told otherwise, the multicast route `224.0.0.0/4` (which attach adds last) is there —
//! then replaces itself with the container's command, looked up on `PATH`.
//!
//! It learns of changes through an rtnetlink socket subscribed to link and IPv4 route
//! notifications, and checks the state with link and route dumps on a second socket; it
//! subscribes before the first check, so nothing that happens in between is missed.
//!
//! Its variant is a file `mode` next to the binary (the router provides three directories,
//! each bound at `/w` in a container): no file waits for both, `nomcast` waits for the
//! interface only, `noop` waits for nothing. With no command it prints `No command specified`
//! and exits 1.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, ExitCode};

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// The container's weave interface.
const INTERFACE: &str = "ethwe";
/// `RTMGRP_LINK`.
const GROUP_LINK: u32 = 0x1;
/// `RTMGRP_IPV4_ROUTE`.
const GROUP_IPV4_ROUTE: u32 = 0x40;

/// What to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `ethwe` up and the multicast route.
    Full,
    /// `ethwe` up.
    NoMulticast,
    /// Nothing.
    Noop,
}

impl Mode {
    /// The variant named by the `mode` file next to the binary `argv0`.
    fn of(argv0: &Path) -> Self {
        match std::fs::read_to_string(argv0.with_file_name("mode")) {
            Ok(s) => Self::parse(&s),
            Err(_) => Self::Full,
        }
    }

    fn parse(s: &str) -> Self {
        match s.trim() {
            "nomcast" => Self::NoMulticast,
            "noop" => Self::Noop,
            _ => Self::Full,
        }
    }
}

/// What the dumps showed.
#[derive(Debug, Default, Clone, Copy)]
struct State {
    up: bool,
    multicast_route: bool,
}

impl State {
    fn ready(self, mode: Mode) -> bool {
        match mode {
            Mode::Noop => true,
            Mode::NoMulticast => self.up,
            Mode::Full => self.up && self.multicast_route,
        }
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| OsString::from("/w/w"));
    let command: Vec<OsString> = args.collect();
    let Some((program, rest)) = command.split_first() else {
        eprintln!("No command specified");
        return ExitCode::from(1);
    };
    let mode = Mode::of(Path::new(&argv0));
    if mode != Mode::Noop {
        if let Err(e) = wait(mode) {
            eprintln!("weavewait: {e}");
            return ExitCode::from(1);
        }
    }
    let e = Command::new(program).args(rest).exec();
    eprintln!("weavewait: cannot run {}: {e}", program.to_string_lossy());
    ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

/// Blocks until the state `mode` asks for is there.
fn wait(mode: Mode) -> std::io::Result<()> {
    let mut events = Socket::new(NETLINK_ROUTE)?;
    events.bind(&SocketAddr::new(0, GROUP_LINK | GROUP_IPV4_ROUTE))?;
    let mut dumps = Socket::new(NETLINK_ROUTE)?;
    dumps.bind_auto()?;
    dumps.connect(&SocketAddr::new(0, 0))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if state(&dumps)?.ready(mode) {
            return Ok(());
        }
        // Any notification may be the one: look again. ENOBUFS (missed notifications) too.
        match events.recv(&mut &mut buf[..], 0) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(105) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Dumps links and IPv4 routes.
fn state(s: &Socket) -> std::io::Result<State> {
    let mut st = State::default();
    for m in dump(s, RouteNetlinkMessage::GetLink(LinkMessage::default()))? {
        if let RouteNetlinkMessage::NewLink(l) = m {
            let named = l
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfName(n) if n == INTERFACE));
            if named && l.header.flags.contains(LinkFlags::Up) {
                st.up = true;
            }
        }
    }
    let mut route = RouteMessage::default();
    route.header.address_family = AddressFamily::Inet;
    for m in dump(s, RouteNetlinkMessage::GetRoute(route))? {
        if let RouteNetlinkMessage::NewRoute(r) = m {
            if is_multicast_route(&r) {
                st.multicast_route = true;
            }
        }
    }
    Ok(st)
}

/// `224.0.0.0/4`.
fn is_multicast_route(r: &RouteMessage) -> bool {
    r.header.destination_prefix_length == 4
        && r.attributes.iter().any(|a| {
            matches!(a, RouteAttribute::Destination(RouteAddress::Inet(d)) if d.octets() == [224, 0, 0, 0])
        })
}

/// Sends a dump request and collects the answers.
fn dump(s: &Socket, msg: RouteNetlinkMessage) -> std::io::Result<Vec<RouteNetlinkMessage>> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.header.sequence_number = 1;
    req.finalize();
    let mut out = vec![0u8; req.buffer_len()];
    req.serialize(&mut out);
    s.send(&out, 0)?;
    let mut found = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.recv(&mut &mut buf[..], 0)?;
        let mut off = 0;
        while off < n {
            let bytes = &buf[off..n];
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                .map_err(|e| std::io::Error::other(format!("netlink: {e}")))?;
            let len = usize::try_from(m.header.length).unwrap_or(0);
            match m.payload {
                NetlinkPayload::InnerMessage(i) => found.push(i),
                NetlinkPayload::Done(_) => return Ok(found),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(std::io::Error::from_raw_os_error(
                            code.get().saturating_neg(),
                        ));
                    }
                }
                _ => {}
            }
            if m.header.message_type == NLMSG_DONE || m.header.message_type == NLMSG_ERROR {
                return Ok(found);
            }
            if len == 0 {
                break;
            }
            off += (len + 3) & !3;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("nomcast\n"), Mode::NoMulticast);
        assert_eq!(Mode::parse("noop"), Mode::Noop);
        assert_eq!(Mode::parse(""), Mode::Full);
        let up = State {
            up: true,
            multicast_route: false,
        };
        assert!(!up.ready(Mode::Full));
        assert!(up.ready(Mode::NoMulticast));
        assert!(State::default().ready(Mode::Noop));
    }
}
