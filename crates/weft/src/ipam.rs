//! The CLI's side of IPAM, as Weave Net's script has it: the leading address arguments of
//! attach, detach, expose and hide (`[ip:]<cidr>`, `net:<cidr>`, `net:default`), turned into
//! addresses by the router's `/ip` routes (`ipam_cidrs` in the script), their release, and the
//! `prime` and `rmpeer` commands.
//!
//! A 404 from the router means IPAM is off: fatal for `net:` arguments, ignored for addresses
//! given by hand (which then work without IPAM, or without a router at all).

use std::fmt;
use std::process::ExitCode;

use weft_types::Ipv4Cidr;

use crate::client::{self, segment, Reply};
use crate::{print_reply, prog};

/// What `net:` arguments print when the router has no IPAM.
pub(crate) const NEED_IPAM: &str = "IP address allocation must be enabled to use 'net:'";

/// One leading address argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddrArg {
    /// `net:default`: an address in the default subnet.
    Default,
    /// `net:<cidr>`: an address in that subnet.
    Subnet(Ipv4Cidr),
    /// `<cidr>` or `ip:<cidr>`: this address.
    Explicit(Ipv4Cidr),
}

/// Why an IPAM step failed; printed as one message, exit 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// `net:` asked of a router without IPAM.
    NeedIpam,
    /// No router answers.
    NotRunning,
    /// Anything else, as it should be printed.
    Message(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NeedIpam => f.write_str(NEED_IPAM),
            Self::NotRunning => {
                write!(f, "{} router is not running. Have you launched it?", prog())
            }
            Self::Message(m) => f.write_str(m.trim_end()),
        }
    }
}

impl Failure {
    /// Prints the message on stderr; exit code 1.
    pub(crate) fn report(&self) -> ExitCode {
        eprintln!("{self}");
        ExitCode::from(1)
    }

    fn from_reply(r: Reply) -> Self {
        match r {
            Reply::Down => Self::NotRunning,
            Reply::NotFound => Self::NeedIpam,
            Reply::Failed(_, body) => Self::Message(body),
            Reply::Ok(body) => Self::Message(body),
        }
    }
}

/// Splits Weave's `[addr...] <rest>` form: the leading address arguments, then the rest.
/// Weave's `is_cidr`: the shape `n.n.n.n/n`, digits only (an image such as
/// `10.0.0.5:5000/app` is none).
fn looks_like_cidr(s: &str) -> bool {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    s.split_once('/').is_some_and(|(addr, len)| {
        digits(len) && addr.split('.').count() == 4 && addr.split('.').all(digits)
    })
}

pub(crate) fn split_addrs(args: &[String]) -> Result<(Vec<AddrArg>, Vec<String>), Failure> {
    let mut addrs = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if a == "net:default" {
            addrs.push(AddrArg::Default);
        } else if let Some(s) = a.strip_prefix("net:") {
            let c = s.parse::<Ipv4Cidr>().map_err(|_| {
                Failure::Message(format!(
                    "invalid subnet {a:?}: expected net:a.b.c.d/len or net:default"
                ))
            })?;
            addrs.push(AddrArg::Subnet(c));
        } else if looks_like_cidr(a.strip_prefix("ip:").unwrap_or(a)) {
            let c = weft_attach::parse_cidr(a).map_err(|e| Failure::Message(e.to_string()))?;
            addrs.push(AddrArg::Explicit(c));
        } else if a.starts_with("ip:") {
            return Err(Failure::Message(format!(
                "invalid address {a:?}: expected ip:a.b.c.d/len"
            )));
        } else {
            return Ok((addrs, args[i..].to_vec()));
        }
    }
    Ok((addrs, Vec::new()))
}

/// The IPAM routes of one identity (`netns:NAME`, `pid:PID`, `weave:expose`) on one router.
pub(crate) struct Ipam<'a> {
    http: &'a str,
    ident: &'a str,
}

impl<'a> Ipam<'a> {
    pub(crate) fn new(http: &'a str, ident: &'a str) -> Self {
        Self { http, ident }
    }

    /// `/ip/<ident>`, or `/ip/<ident>/<ip>/<len>` for a subnet or an address.
    fn path(&self, cidr: Option<Ipv4Cidr>) -> String {
        match cidr {
            None => format!("/ip/{}", segment(self.ident)),
            Some(c) => format!(
                "/ip/{}/{}/{}",
                segment(self.ident),
                c.addr(),
                c.prefix_len()
            ),
        }
    }

    /// Weave's `ipam_cidrs allocate` (or `allocate_no_check_alive`): an address for each
    /// `net:` argument (`POST`), a claim for each explicit one (`PUT`); no arguments means
    /// `net:default`. Every address the router handed out or confirmed is added to `obtained`
    /// as it comes, so that the caller can give back what it cannot use even when a later
    /// argument fails.
    pub(crate) fn allocate(
        &self,
        args: &[AddrArg],
        check_alive: bool,
        obtained: &mut Vec<Ipv4Cidr>,
    ) -> Result<Vec<Ipv4Cidr>, Failure> {
        let query: &[(&str, &str)] = if check_alive {
            &[("check-alive", "true")]
        } else {
            &[]
        };
        let mut all = Vec::new();
        for arg in defaulted(args) {
            let subnet = match arg {
                AddrArg::Explicit(c) => {
                    match client::call(self.http, "PUT", &self.path(Some(c)), query) {
                        Reply::Ok(_) => obtained.push(c),
                        // IPAM off, or no router: an address given by hand needs neither.
                        Reply::NotFound | Reply::Down => {}
                        Reply::Failed(_, body) => return Err(Failure::Message(body)),
                    }
                    all.push(c);
                    continue;
                }
                AddrArg::Default => None,
                AddrArg::Subnet(c) => Some(c),
            };
            match client::call(self.http, "POST", &self.path(subnet), query) {
                Reply::Ok(body) if body.trim() == "cancelled" => {
                    return Err(Failure::Message(format!(
                        "IP address allocation for {} was cancelled: the container is not running",
                        self.ident
                    )))
                }
                Reply::Ok(body) => {
                    let c = body.trim().parse::<Ipv4Cidr>().map_err(|_| {
                        Failure::Message(format!(
                            "the router answered an allocation with {:?}, not an address",
                            body.trim()
                        ))
                    })?;
                    obtained.push(c);
                    all.push(c);
                }
                other => return Err(Failure::from_reply(other)),
            }
        }
        Ok(all)
    }

    /// Weave's `ipam_cidrs lookup`: the addresses IPAM holds for the identity in each `net:`
    /// argument's subnet (`GET`), and the explicit ones as given; no arguments means
    /// `net:default`. Returns them in argument order.
    pub(crate) fn lookup(&self, args: &[AddrArg]) -> Result<Vec<Ipv4Cidr>, Failure> {
        let mut found = Vec::new();
        for arg in defaulted(args) {
            let subnet = match arg {
                AddrArg::Explicit(c) => {
                    found.push(c);
                    continue;
                }
                AddrArg::Default => None,
                AddrArg::Subnet(c) => Some(c),
            };
            match client::call(self.http, "GET", &self.path(subnet), &[]) {
                Reply::Ok(body) => {
                    for w in body.split_whitespace() {
                        let c = w.parse::<Ipv4Cidr>().map_err(|_| {
                            Failure::Message(format!(
                                "the router listed {w:?} among the addresses of {}",
                                self.ident
                            ))
                        })?;
                        found.push(c);
                    }
                }
                other => return Err(Failure::from_reply(other)),
            }
        }
        Ok(found)
    }

    /// Gives each address back (`DELETE /ip/<ident>/<ip>`). IPAM being off (404), the router
    /// being down, and addresses IPAM never gave this identity (400) are not errors: an
    /// address given by hand may never have been IPAM's. Anything else is.
    pub(crate) fn release(&self, cidrs: &[Ipv4Cidr]) -> Result<(), Failure> {
        let mut result = Ok(());
        for c in cidrs {
            let path = format!("/ip/{}/{}", segment(self.ident), c.addr());
            match client::call(self.http, "DELETE", &path, &[]) {
                Reply::Ok(_) | Reply::NotFound | Reply::Down | Reply::Failed(400, _) => {}
                Reply::Failed(_, body) => {
                    result = Err(Failure::Message(format!(
                        "releasing {}: {}",
                        c.addr(),
                        body.trim_end()
                    )))
                }
            }
        }
        result
    }

    /// After a failure: gives back what this call obtained unless it is in use. `in_use` is
    /// what the identity still carries (`None`: unknown, so nothing is given back: a leaked
    /// address is found again by IPAM's liveness checks, one in use twice is not).
    pub(crate) fn release_unused(&self, obtained: &[Ipv4Cidr], in_use: Option<&[Ipv4Cidr]>) {
        let Some(in_use) = in_use else {
            if !obtained.is_empty() {
                eprintln!(
                    "cannot tell which addresses {} uses; keeping {}",
                    self.ident,
                    ips(obtained)
                );
            }
            return;
        };
        let unused: Vec<Ipv4Cidr> = obtained
            .iter()
            .filter(|c| !in_use.iter().any(|u| u.addr() == c.addr()))
            .copied()
            .collect();
        if let Err(e) = self.release(&unused) {
            eprintln!("{e}");
        }
    }
}

/// The addresses without their prefix length, space-separated, as Weave prints them.
pub(crate) fn ips(cidrs: &[Ipv4Cidr]) -> String {
    cidrs
        .iter()
        .map(|c| c.addr().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The arguments, or `net:default` when there are none.
fn defaulted(args: &[AddrArg]) -> Vec<AddrArg> {
    if args.is_empty() {
        vec![AddrArg::Default]
    } else {
        args.to_vec()
    }
}

/// `weft prime`: `GET /ring`, which returns once the IPAM ring exists.
pub(crate) fn prime(http: &str, args: &[String]) -> ExitCode {
    if !args.is_empty() {
        return crate::usage_error();
    }
    print_reply(client::call(http, "GET", "/ring", &[]))
}

/// `weft rmpeer <peer>...`: `DELETE /peer/<peer>` for each (name or nickname), printing what
/// the router says it took over; exit 1 when any call failed.
pub(crate) fn rmpeer(http: &str, peers: &[String]) -> ExitCode {
    if peers.is_empty() {
        return crate::usage_error();
    }
    let mut code = ExitCode::SUCCESS;
    for p in peers {
        let path = format!("/peer/{}", segment(p));
        if print_reply(client::call(http, "DELETE", &path, &[])) != ExitCode::SUCCESS {
            code = ExitCode::from(1);
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cidr, strings as s, Canned, FakeRouter};

    #[test]
    fn leading_addresses_are_split_off() {
        let (a, rest) = split_addrs(&s(&[
            "10.2.1.1/24",
            "ip:10.2.2.1/24",
            "net:default",
            "net:10.32.0.0/24",
            "netns:c1",
            "10.2.3.1/24",
        ]))
        .unwrap();
        assert_eq!(
            a,
            vec![
                AddrArg::Explicit(cidr("10.2.1.1/24")),
                AddrArg::Explicit(cidr("10.2.2.1/24")),
                AddrArg::Default,
                AddrArg::Subnet(cidr("10.32.0.0/24")),
            ]
        );
        assert_eq!(rest, s(&["netns:c1", "10.2.3.1/24"]));
        let (a, rest) = split_addrs(&s(&["--without-masquerade"])).unwrap();
        assert!(a.is_empty());
        assert_eq!(rest, s(&["--without-masquerade"]));
        assert_eq!(
            split_addrs(&s(&["10.2.1.1/24"])).unwrap().1,
            Vec::<String>::new()
        );
        for bad in [
            "10.2.1.1/40",
            "10.2.1.300/24",
            "ip:nope",
            "net:10.2.1.0",
            "net:x",
        ] {
            assert!(split_addrs(&s(&[bad, "netns:c1"])).is_err(), "{bad}");
        }
        // An image from a registry with a port is no address.
        let (a, rest) = split_addrs(&s(&["10.0.0.5:5000/app", "sh"])).unwrap();
        assert!(a.is_empty());
        assert_eq!(rest, s(&["10.0.0.5:5000/app", "sh"]));
    }

    #[test]
    fn allocate_posts_for_net_and_puts_for_explicit() {
        let r = FakeRouter::start(|req| match req.method.as_str() {
            "POST" if req.path == "/ip/netns:c1" => Canned::ok("10.32.0.1/12"),
            "POST" => Canned::ok("10.40.0.1/24\n"),
            _ => Canned::status(204, ""),
        });
        let ipam = Ipam::new(r.addr(), "netns:c1");
        let mut got = Vec::new();
        let args = [
            AddrArg::Default,
            AddrArg::Subnet(cidr("10.40.0.0/24")),
            AddrArg::Explicit(cidr("10.2.1.1/24")),
        ];
        let all = ipam.allocate(&args, true, &mut got).unwrap();
        assert_eq!(
            all,
            vec![
                cidr("10.32.0.1/12"),
                cidr("10.40.0.1/24"),
                cidr("10.2.1.1/24")
            ]
        );
        assert_eq!(got, all);
        assert_eq!(
            r.requests(),
            vec![
                "POST /ip/netns:c1?check-alive=true",
                "POST /ip/netns:c1/10.40.0.0/24?check-alive=true",
                "PUT /ip/netns:c1/10.2.1.1/24?check-alive=true",
            ]
        );
        // No arguments: net:default; without check-alive for expose.
        let mut got = Vec::new();
        Ipam::new(r.addr(), "weave:expose")
            .allocate(&[], false, &mut got)
            .unwrap();
        assert_eq!(r.requests().last().unwrap(), "POST /ip/weave:expose");
    }

    #[test]
    fn allocate_failures() {
        let r = FakeRouter::start(|req| match req.path.as_str() {
            "/ip/pid:7" => Canned::ok("cancelled"),
            "/ip/netns:off" | "/ip/netns:off/10.2.1.1/24" => {
                Canned::status(404, "404 page not found\n")
            }
            _ => Canned::status(
                400,
                "Unable to claim: address 10.32.0.9 is already owned by netns:c9\n",
            ),
        });
        let mut got = Vec::new();
        let e = Ipam::new(r.addr(), "pid:7")
            .allocate(&[], true, &mut got)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "IP address allocation for pid:7 was cancelled: the container is not running"
        );
        let off = Ipam::new(r.addr(), "netns:off");
        assert_eq!(
            off.allocate(&[], true, &mut got).unwrap_err(),
            Failure::NeedIpam
        );
        assert_eq!(Failure::NeedIpam.to_string(), NEED_IPAM);
        // IPAM off: an explicit address is not a failure, and nothing was obtained.
        let one = [AddrArg::Explicit(cidr("10.2.1.1/24"))];
        assert_eq!(
            off.allocate(&one, true, &mut got).unwrap(),
            vec![cidr("10.2.1.1/24")]
        );
        assert!(got.is_empty());
        let e = Ipam::new(r.addr(), "netns:c1")
            .allocate(&[AddrArg::Explicit(cidr("10.32.0.9/12"))], true, &mut got)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Unable to claim: address 10.32.0.9 is already owned by netns:c9"
        );
        assert!(got.is_empty());
    }

    #[test]
    fn no_router() {
        let addr = crate::testing::closed_addr();
        let ipam = Ipam::new(&addr, "netns:c1");
        let mut got = Vec::new();
        assert_eq!(
            ipam.allocate(&[], true, &mut got).unwrap_err(),
            Failure::NotRunning
        );
        let one = [AddrArg::Explicit(cidr("10.2.1.1/24"))];
        assert_eq!(
            ipam.allocate(&one, true, &mut got).unwrap(),
            vec![cidr("10.2.1.1/24")]
        );
        assert_eq!(ipam.release(&[cidr("10.2.1.1/24")]), Ok(()));
    }

    #[test]
    fn lookup_gets_and_release_deletes() {
        let r = FakeRouter::start(|req| match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/ip/netns:a%20b") => Canned::ok("10.32.0.1/12 10.32.0.2/12"),
            ("GET", _) => Canned::ok(""),
            ("DELETE", "/ip/netns:a%20b/10.32.0.1") => Canned::status(204, ""),
            ("DELETE", "/ip/netns:a%20b/10.2.1.1") => {
                Canned::status(400, "Unable to free: Free: address 10.2.1.1 not found\n")
            }
            _ => Canned::status(500, "boom\n"),
        });
        let ipam = Ipam::new(r.addr(), "netns:a b");
        let found = ipam
            .lookup(&[
                AddrArg::Explicit(cidr("10.2.1.1/24")),
                AddrArg::Default,
                AddrArg::Subnet(cidr("10.40.0.0/16")),
            ])
            .unwrap();
        assert_eq!(
            found,
            vec![
                cidr("10.2.1.1/24"),
                cidr("10.32.0.1/12"),
                cidr("10.32.0.2/12")
            ]
        );
        assert_eq!(
            r.requests(),
            vec!["GET /ip/netns:a%20b", "GET /ip/netns:a%20b/10.40.0.0/16"]
        );
        assert_eq!(
            ipam.release(&[cidr("10.32.0.1/12"), cidr("10.2.1.1/24")]),
            Ok(())
        );
        assert_eq!(
            ipam.release(&[cidr("10.32.0.2/12")]),
            Err(Failure::Message("releasing 10.32.0.2: boom".into()))
        );
        assert_eq!(
            &r.requests()[2..],
            [
                "DELETE /ip/netns:a%20b/10.32.0.1",
                "DELETE /ip/netns:a%20b/10.2.1.1",
                "DELETE /ip/netns:a%20b/10.32.0.2",
            ]
        );
        let off = FakeRouter::start(|_| Canned::status(404, ""));
        assert_eq!(
            Ipam::new(off.addr(), "netns:c").lookup(&[]).unwrap_err(),
            Failure::NeedIpam
        );
    }

    #[test]
    fn release_unused_spares_what_is_in_use() {
        let r = FakeRouter::start(|_| Canned::status(204, ""));
        let ipam = Ipam::new(r.addr(), "netns:c1");
        let got = [cidr("10.32.0.1/12"), cidr("10.32.0.2/12")];
        ipam.release_unused(&got, Some(&[cidr("10.32.0.1/12")]));
        assert_eq!(r.requests(), vec!["DELETE /ip/netns:c1/10.32.0.2"]);
        ipam.release_unused(&got, None);
        assert_eq!(r.requests().len(), 1);
    }

    #[test]
    fn prime_and_rmpeer() {
        let r = FakeRouter::start(|req| match req.path.as_str() {
            "/ring" => Canned::ok(""),
            "/peer/host2" => Canned::ok("12 IPs taken over from host2\n"),
            _ => Canned::status(404, ""),
        });
        assert_eq!(prime(r.addr(), &[]), ExitCode::SUCCESS);
        assert_eq!(rmpeer(r.addr(), &s(&["host2"])), ExitCode::SUCCESS);
        assert_eq!(rmpeer(r.addr(), &s(&["host2", "a/b"])), ExitCode::from(1));
        assert_eq!(
            r.requests(),
            vec![
                "GET /ring",
                "DELETE /peer/host2",
                "DELETE /peer/host2",
                "DELETE /peer/a%2Fb",
            ]
        );
    }
}
