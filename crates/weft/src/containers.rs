//! `weft attach`, `detach`, `ps`, `expose` and `hide`: argument grammar and output as Weave
//! Net's script has them; the plumbing is weft-attach's, the exposure is the router's.

use std::process::ExitCode;

use weft_attach::{blocking, Container};
use weft_types::Ipv4Cidr;

use crate::client::{self, Reply};
use crate::{http_addr, print_reply, usage_error};

const NEED_IPAM: &str = "IP address allocation must be enabled to use 'net:'";

/// Splits Weave's `[addr...] <rest>` form: leading CIDR / `ip:` / `net:` arguments.
fn split_addrs(args: &[String]) -> Result<(Vec<Ipv4Cidr>, bool, Vec<String>), String> {
    let mut cidrs = Vec::new();
    let mut wants_ipam = false;
    let mut rest = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if a.starts_with("net:") {
            wants_ipam = true;
        } else if a.contains('/')
            && a.chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || a.starts_with("ip:"))
        {
            cidrs.push(weft_attach::parse_cidr(a).map_err(|e| e.to_string())?);
        } else if a.starts_with("ip:") {
            return Err(format!("invalid address {a:?}: expected ip:a.b.c.d/len"));
        } else {
            rest.extend(args[i..].iter().cloned());
            break;
        }
    }
    Ok((cidrs, wants_ipam, rest))
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(1)
}

fn ips(cidrs: &[Ipv4Cidr]) -> String {
    cidrs
        .iter()
        .map(|c| c.addr().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The API path that exposes or hides `c`.
fn expose_path(c: &Ipv4Cidr) -> String {
    format!("/expose/{}/{}", c.addr(), c.prefix_len())
}

/// `weft attach [addr...] [--without-dns] [--rewrite-hosts] [--add-host h:ip]...
/// [--no-multicast-route] <container>`.
pub(crate) fn attach(args: &[String]) -> ExitCode {
    let (cidrs, wants_ipam, rest) = match split_addrs(args) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let mut multicast = true;
    let mut container = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--without-dns" | "--rewrite-hosts" => {}
            "--no-multicast-route" => multicast = false,
            "--add-host" => {
                it.next();
            }
            s if s.starts_with("--add-host=") => {}
            s if s.starts_with('-') => return usage_error(),
            s if container.is_none() => container = Some(s.to_string()),
            _ => return usage_error(),
        }
    }
    let Some(container) = container else {
        return usage_error();
    };
    if wants_ipam || cidrs.is_empty() {
        return fail(NEED_IPAM);
    }
    let c = match Container::parse(&container) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match blocking::attach(&c, &cidrs, multicast) {
        Ok(done) => {
            println!("{}", ips(&done));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `weft detach [addr...] <container>`.
pub(crate) fn detach(args: &[String]) -> ExitCode {
    let (cidrs, wants_ipam, rest) = match split_addrs(args) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let [container] = rest.as_slice() else {
        return usage_error();
    };
    if wants_ipam {
        return fail(NEED_IPAM);
    }
    let c = match Container::parse(container) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match blocking::detach(&c, &cidrs) {
        Ok(done) => {
            println!("{}", ips(&done));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `weft ps [container...]`.
pub(crate) fn ps(args: &[String]) -> ExitCode {
    let containers: Vec<Container> = if args.is_empty() {
        weft_attach::named_netns()
    } else {
        match args.iter().map(|a| Container::parse(a)).collect() {
            Ok(v) => v,
            Err(e) => return fail(e),
        }
    };
    match blocking::ps(&containers) {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `weft expose [addr...] [-h fqdn] [--without-masquerade]`.
pub(crate) fn expose(args: &[String]) -> ExitCode {
    let (cidrs, wants_ipam, rest) = match split_addrs(args) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let mut skip_nat = false;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--without-masquerade" => skip_nat = true,
            "-h" => {
                if it.next().is_none() {
                    return usage_error();
                }
            }
            _ => return usage_error(),
        }
    }
    if wants_ipam || cidrs.is_empty() {
        return fail(NEED_IPAM);
    }
    for c in &cidrs {
        let path = expose_path(c);
        let form: &[(&str, &str)] = if skip_nat {
            &[("skipNAT", "true")]
        } else {
            &[]
        };
        match client::post_form(&http_addr(), &path, form) {
            Reply::Ok(_) => {}
            other => return print_reply(other),
        }
    }
    println!("{}", ips(&cidrs));
    ExitCode::SUCCESS
}

/// `weft hide [addr...]`: without addresses, everything exposed.
pub(crate) fn hide(args: &[String]) -> ExitCode {
    let (cidrs, wants_ipam, rest) = match split_addrs(args) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    if !rest.is_empty() {
        return usage_error();
    }
    if wants_ipam {
        return fail(NEED_IPAM);
    }
    let targets = if cidrs.is_empty() {
        match client::get(&http_addr(), "/expose", false) {
            Reply::Ok(body) => body
                .split_whitespace()
                .filter_map(|s| s.parse::<Ipv4Cidr>().ok())
                .collect(),
            other => return print_reply(other),
        }
    } else {
        cidrs
    };
    for c in &targets {
        match client::delete(&http_addr(), &expose_path(c)) {
            Reply::Ok(_) => {}
            other => return print_reply(other),
        }
    }
    println!("{}", ips(&targets));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn leading_addresses_are_split_off() {
        let (c, ipam, rest) =
            split_addrs(&s(&["10.2.1.1/24", "ip:10.2.2.1/24", "netns:c1"])).unwrap();
        assert_eq!(c.len(), 2);
        assert!(!ipam);
        assert_eq!(rest, s(&["netns:c1"]));
        let (_, ipam, _) = split_addrs(&s(&["net:default", "netns:c1"])).unwrap();
        assert!(ipam);
        assert!(split_addrs(&s(&["10.2.1.1/40", "netns:c1"])).is_err());
    }
}
