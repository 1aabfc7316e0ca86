//! A container's `/etc/hosts` as Weave Net writes it (for the Docker API proxy's attach and for
//! `weft run` / `weft attach --rewrite-hosts`): one line per weave address with the container's
//! names, the `--add-host` entries, and the usual localhost lines, between Weave's BEGIN and
//! END markers.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::ContainerInfo;

/// The end of the file: the localhost entries and the END marker.
pub const LOCALHOST: &str = "\n# default localhost entries\n\
    127.0.0.1       localhost\n\
    ::1             ip6-localhost ip6-loopback\n\
    fe00::0         ip6-localnet\n\
    ff00::0         ip6-mcastprefix\n\
    ff02::1         ip6-allnodes\n\
    ff02::2         ip6-allrouters\n\
    # created by Weave - END\n";

/// The names of container `c` on its address lines, as Weave derives them from
/// `Hostname.Domainname`: the name up to the first dot, after the full name when there is a
/// domain part (`a1.weave.local a1`; `a1` alone without one).
fn names(c: &ContainerInfo) -> String {
    let fqdn = format!("{}.{}", c.hostname, c.domainname);
    let (name, domain) = fqdn.split_once('.').unwrap_or((fqdn.as_str(), ""));
    if domain.is_empty() {
        name.to_string()
    } else {
        format!("{} {name}", fqdn.strip_suffix('.').unwrap_or(&fqdn))
    }
}

/// The hosts file of container `c` with weave addresses `ips` and static entries
/// `extra_hosts` (`name:ip` or `name=ip`, as `--add-host` takes them; others are skipped).
pub fn contents(c: &ContainerInfo, ips: &[Ipv4Addr], extra_hosts: &[String]) -> String {
    let names = names(c);
    let mut out = String::from("# created by Weave - BEGIN\n# container hostname\n");
    for ip in ips {
        out.push_str(&format!("{:<15} {names}\n", ip.to_string()));
    }
    out.push_str("\n# static names added with --add-host\n");
    for h in extra_hosts {
        // `name:ip`, or Docker 25's `name=ip`.
        if let Some((name, ip)) = h.split_once('=').or_else(|| h.split_once(':')) {
            out.push_str(&format!("{ip:<15} {name}\n"));
        }
    }
    out.push_str(LOCALHOST);
    out
}

/// Writes `text` to the host file Docker binds at a container's `/etc/hosts`, Weave's way: into
/// the bound file (which the container sees), then the name is unlinked and written again, so
/// that Docker's later edits go to a file the container no longer sees while the path keeps
/// valid contents.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)?;
    std::fs::remove_file(path)?;
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(hostname: &str, domainname: &str) -> ContainerInfo {
        ContainerInfo {
            hostname: hostname.into(),
            domainname: domainname.into(),
            ..ContainerInfo::default()
        }
    }

    #[test]
    fn as_weave_writes_it() {
        let text = contents(
            &info("a1", "weave.local"),
            &[Ipv4Addr::new(10, 32, 0, 2), Ipv4Addr::new(10, 2, 1, 5)],
            &[
                "db:10.0.0.9".into(),
                "bogus".into(),
                "cache=10.0.0.8".into(),
            ],
        );
        assert_eq!(
            text.strip_suffix(LOCALHOST),
            Some(
                "# created by Weave - BEGIN\n\
                 # container hostname\n\
                 10.32.0.2       a1.weave.local a1\n\
                 10.2.1.5        a1.weave.local a1\n\
                 \n\
                 # static names added with --add-host\n\
                 10.0.0.9        db\n\
                 10.0.0.8        cache\n"
            )
        );
        assert!(LOCALHOST.contains("\n127.0.0.1       localhost\n::1             ip6-localhost"));
    }

    #[test]
    fn names_from_hostname_and_domain() {
        assert_eq!(names(&info("a1", "weave.local")), "a1.weave.local a1");
        assert_eq!(names(&info("web.weave.local", "")), "web.weave.local web");
        assert_eq!(names(&info("a1", "")), "a1");
        assert_eq!(names(&info("a1", "weave.local.")), "a1.weave.local a1");
    }

    #[test]
    fn written_unlinked_and_written_again() {
        let dir = std::env::temp_dir().join(format!("weft-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts");
        std::fs::write(&path, "docker's\n").unwrap();
        // What a bind mount would keep seeing: the original file.
        let bound = std::fs::File::open(&path).unwrap();
        write(&path, "weave's\n").unwrap();
        let mut seen = String::new();
        std::io::Read::read_to_string(&mut &bound, &mut seen).unwrap();
        assert_eq!(seen, "weave's\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "weave's\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
