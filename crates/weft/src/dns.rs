//! The CLI's side of weftDNS, as Weave Net's script has it: registering a container's name
//! when it is attached (and an exposed address's with `expose -h`), and the `dns-add`,
//! `dns-remove`, `dns-lookup` and `dns-args` commands.
//!
//! A container's name is its hostname, registered only when it has a domain part (Weave's
//! rule): for `netns:NAME` the first line of `/etc/netns/NAME/hostname` (what `ip netns exec`
//! bind-mounts as the namespace's `/etc/hostname`), for `pid:PID` the process's
//! `/etc/hostname`. A 404 from the router means DNS is off: registration is then skipped.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

use weft_attach::Container;
use weft_core::dns::responder::{a_query, answer_addrs};
use weft_types::Ipv4Cidr;

use crate::client::{self, segment, Reply};
use crate::containers::{self, reply_failure};
use crate::ipam::Failure;
use crate::{http_addr, print_reply, usage_error};

/// The ident of names registered without a container.
pub(crate) const EXTERN_IDENT: &str = "weave:extern";
/// How long `dns-lookup` waits for the answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The container's fully qualified hostname, if it has one with a domain part.
pub(crate) fn container_fqdn(c: &Container) -> Option<String> {
    let path = match c {
        Container::Netns(n) => format!("/etc/netns/{n}/hostname"),
        Container::Pid(p) => format!("/proc/{p}/root/etc/hostname"),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let name = text.lines().next()?.trim().trim_end_matches('.');
    name.contains('.').then(|| name.to_string())
}

/// `/name/<ident>/<ip>`.
fn name_path(ident: &str, ip: Ipv4Addr) -> String {
    format!("/name/{}/{ip}", segment(ident))
}

/// Registers `fqdn` for each address of `ident`; `check_alive` as Weave's attach asks it.
/// `Ok(false)`: DNS is off.
pub(crate) fn register(
    http: &str,
    ident: &str,
    ips: &[Ipv4Addr],
    fqdn: &str,
    check_alive: bool,
) -> Result<bool, Failure> {
    for ip in ips {
        let mut form = vec![("fqdn", fqdn)];
        if check_alive {
            form.push(("check-alive", "true"));
        }
        match client::send_form(http, "PUT", &name_path(ident, *ip), &form) {
            Reply::Ok(_) => {}
            Reply::NotFound => return Ok(false),
            other => return Err(reply_failure(other)),
        }
    }
    Ok(true)
}

/// Removes the names of each address of `ident` (only `fqdn`, if given). DNS being off is
/// no failure: there is nothing to remove.
pub(crate) fn deregister(
    http: &str,
    ident: &str,
    ips: &[Ipv4Addr],
    fqdn: Option<&str>,
) -> Result<(), Failure> {
    for ip in ips {
        let query: Vec<(&str, &str)> = fqdn.map(|f| ("fqdn", f)).into_iter().collect();
        match client::call(http, "DELETE", &name_path(ident, *ip), &query) {
            Reply::Ok(_) | Reply::NotFound => {}
            other => return Err(reply_failure(other)),
        }
    }
    Ok(())
}

/// The addresses of cidrs.
pub(crate) fn addrs(cidrs: &[Ipv4Cidr]) -> Vec<Ipv4Addr> {
    cidrs.iter().map(|c| c.addr()).collect()
}

/// What `dns-add` and `dns-remove` were given.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    ips: Vec<Ipv4Addr>,
    /// As given: found by [`containers::resolve`].
    container: Option<String>,
    fqdn: Option<String>,
}

/// `[ip...] <container> [-h fqdn]` or `ip... -h fqdn`.
fn parse_target(args: &[String]) -> Option<Target> {
    let mut ips = Vec::new();
    let mut container = None;
    let mut fqdn = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-h" {
            fqdn = Some(it.next()?.clone());
        } else if let Some(h) = a.strip_prefix("--hostname=") {
            fqdn = Some(h.to_string());
        } else if let (Ok(ip), None) = (a.parse::<Ipv4Addr>(), &container) {
            ips.push(ip);
        } else if container.is_none() && !a.starts_with('-') {
            container = Some(a.clone());
        } else {
            return None;
        }
    }
    if container.is_none() && (ips.is_empty() || fqdn.is_none()) {
        return None;
    }
    Some(Target {
        ips,
        container,
        fqdn,
    })
}

/// The ident, addresses and name a `dns-add`/`dns-remove` target stands for.
fn resolve(t: Target, need_fqdn: bool) -> Result<(String, Vec<Ipv4Addr>, Option<String>), Failure> {
    let Some(arg) = t.container else {
        return Ok((EXTERN_IDENT.to_string(), t.ips, t.fqdn));
    };
    let found = containers::resolve(&arg)?;
    if !found.container.is_alive() {
        return Err(Failure::Message(format!("container {arg} does not exist")));
    }
    let ips = if t.ips.is_empty() {
        let cidrs = containers::weave_cidrs(&found.container)
            .map_err(|e| Failure::Message(e.to_string()))?;
        addrs(&cidrs)
    } else {
        t.ips
    };
    let fqdn = match t.fqdn {
        Some(f) => Some(f),
        None if need_fqdn => Some(found.fqdn.ok_or_else(|| {
            Failure::Message(format!(
                "container {arg} has no hostname with a domain; give one with -h <fqdn>"
            ))
        })?),
        None => None,
    };
    Ok((found.ident, ips, fqdn))
}

/// `weft dns-add [ip...] <container> [-h fqdn]` or `weft dns-add ip... -h fqdn`.
pub(crate) fn dns_add(args: &[String]) -> ExitCode {
    let Some(t) = parse_target(args) else {
        return usage_error();
    };
    let check_alive = t.container.is_some();
    let result = resolve(t, true).and_then(|(ident, ips, fqdn)| {
        let fqdn = fqdn.unwrap_or_default();
        match register(&http_addr(), &ident, &ips, &fqdn, check_alive)? {
            true => Ok(()),
            false => Err(Failure::Message("DNS is not enabled on the router".into())),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

/// `weft dns-remove [ip...] <container> [-h fqdn]` or `weft dns-remove ip... -h fqdn`.
pub(crate) fn dns_remove(args: &[String]) -> ExitCode {
    let Some(t) = parse_target(args) else {
        return usage_error();
    };
    let result = resolve(t, false)
        .and_then(|(ident, ips, fqdn)| deregister(&http_addr(), &ident, &ips, fqdn.as_deref()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

/// `weft dns-lookup <name>`: asks weftDNS (at `/dns-address-port`) for `name`'s A records and
/// prints one address per line, as Weave's `dig +short` does.
pub(crate) fn dns_lookup(args: &[String]) -> ExitCode {
    let [name] = args else {
        return usage_error();
    };
    let server = match client::get(&http_addr(), "/dns-address-port", false) {
        Reply::Ok(a) => a,
        other => return print_reply(other),
    };
    let Ok(server) = server.trim().parse::<SocketAddr>() else {
        eprintln!("the router gave no usable DNS address: {:?}", server.trim());
        return ExitCode::from(1);
    };
    let id: u16 = rand_id();
    let Some(query) = a_query(name, id) else {
        eprintln!("dns-lookup: invalid name {name:?}");
        return ExitCode::from(1);
    };
    match lookup(server, &query) {
        Ok(answer) => {
            for a in answer_addrs(&answer, id) {
                outln!("{a}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dns-lookup: {server}: {e}");
            ExitCode::from(1)
        }
    }
}

/// A query ID from the clock's low bits: enough to tell our answer from a stray one.
fn rand_id() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (t ^ std::process::id()) as u16
}

fn lookup(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let sock = UdpSocket::bind(("0.0.0.0", 0))?;
    sock.set_read_timeout(Some(LOOKUP_TIMEOUT))?;
    sock.connect(server)?;
    sock.send(query)?;
    let mut buf = vec![0u8; 4096];
    let n = sock.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// `weft dns-args`: the `docker run` flags that point a container at weftDNS, with no
/// trailing newline; nothing when DNS is off.
pub(crate) fn dns_args(args: &[String]) -> ExitCode {
    if !args.is_empty() {
        return usage_error();
    }
    let http = http_addr();
    let (Reply::Ok(domain), Reply::Ok(addr)) = (
        client::get(&http, "/domain", false),
        client::get(&http, "/dns-address", false),
    ) else {
        return ExitCode::SUCCESS;
    };
    out!("--dns={} --dns-search={}", addr.trim(), domain.trim());
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::strings as s;

    #[test]
    fn targets_parse_as_weaves() {
        let t = parse_target(&s(&[
            "10.2.1.1",
            "10.2.1.2",
            "netns:c1",
            "-h",
            "x.weave.local",
        ]))
        .unwrap();
        assert_eq!(t.ips.len(), 2);
        assert_eq!(t.container.as_deref(), Some("netns:c1"));
        assert_eq!(t.fqdn.as_deref(), Some("x.weave.local"));
        let t = parse_target(&s(&["10.2.1.1", "-h", "x.weave.local"])).unwrap();
        assert_eq!(t.container, None);
        let t = parse_target(&s(&["netns:c1"])).unwrap();
        assert!(t.ips.is_empty() && t.fqdn.is_none());
        // Without a container both addresses and a name are needed.
        assert_eq!(parse_target(&s(&["10.2.1.1"])), None);
        assert_eq!(parse_target(&s(&["-h", "x.weave.local"])), None);
        assert_eq!(parse_target(&s(&["netns:c1", "-h"])), None);
        assert_eq!(parse_target(&s(&["netns:c1", "netns:c2"])), None);
        assert_eq!(parse_target(&s(&[])), None);
    }

    #[test]
    fn names_are_registered_per_address() {
        use crate::testing::{Canned, FakeRouter};
        let r = FakeRouter::start(|_| Canned::status(204, ""));
        let ips = [Ipv4Addr::new(10, 32, 0, 1), Ipv4Addr::new(10, 32, 0, 2)];
        assert_eq!(
            register(r.addr(), "netns:c1", &ips, "a.weave.local", true),
            Ok(true)
        );
        deregister(r.addr(), "netns:c1", &ips[..1], Some("a.weave.local")).unwrap();
        deregister(r.addr(), "weave:extern", &ips[1..], None).unwrap();
        assert_eq!(
            r.requests(),
            vec![
                "PUT /name/netns:c1/10.32.0.1 <fqdn=a.weave.local&check-alive=true>",
                "PUT /name/netns:c1/10.32.0.2 <fqdn=a.weave.local&check-alive=true>",
                "DELETE /name/netns:c1/10.32.0.1?fqdn=a.weave.local",
                "DELETE /name/weave:extern/10.32.0.2",
            ]
        );
        let off = FakeRouter::start(|_| Canned::status(404, "404 page not found\n"));
        assert_eq!(
            register(off.addr(), "netns:c1", &ips, "a.weave.local", false),
            Ok(false)
        );
        assert_eq!(deregister(off.addr(), "netns:c1", &ips, None), Ok(()));
    }
}
