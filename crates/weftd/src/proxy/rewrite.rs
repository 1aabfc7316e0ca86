//! What the proxy changes in the JSON bodies it intercepts (Weave Net's
//! `create_container_interceptor.go`, `start_container_interceptor.go` and
//! `create_exec_interceptor.go`): the `/w` bind and the weavewait entrypoint, the hostname
//! derived from the container's name, weftDNS as the container's DNS server, the bind and
//! weftDNS again in the HostConfig of an old-style start, and `/w/w` in front of an exec's
//! command. Pure functions of the body and the settings; the caller does the I/O.

use serde_json::{json, Map, Value};

use super::cidr::{weave_cidrs, CidrError};

/// Where weavewait is inside a container.
pub const WAIT_DIR: &str = "/w";
/// weavewait's path inside a container.
pub const WAIT_BIN: &str = "/w/w";
/// The longest hostname.domainname Docker takes.
const MAX_HOSTNAME: usize = 64;

/// How a name becomes a hostname: `--hostname-from-label`, `--hostname-match`,
/// `--hostname-replacement`.
#[derive(Debug, Clone)]
pub struct HostnameRule {
    /// The label whose value names the container instead of its name, when non-empty.
    pub from_label: String,
    /// Applied to the name (every match replaced).
    pub matcher: regex_lite::Regex,
    /// What each match becomes (`$1` style groups).
    pub replacement: String,
}

impl HostnameRule {
    /// The rule of these flags; an error if `matcher` is not a regular expression.
    pub fn new(from_label: &str, matcher: &str, replacement: &str) -> Result<Self, String> {
        let re = regex_lite::Regex::new(matcher)
            .map_err(|e| format!("--hostname-match {matcher:?}: {e}"))?;
        Ok(Self {
            from_label: from_label.to_string(),
            matcher: re,
            replacement: replacement.to_string(),
        })
    }

    /// The hostname for a container created with `?name=` `name` and labels `labels`.
    pub fn derive(&self, name: Option<&str>, labels: Option<&Map<String, Value>>) -> String {
        let mut base = name.unwrap_or("").to_string();
        if !self.from_label.is_empty() {
            if let Some(v) = labels
                .and_then(|l| l.get(&self.from_label))
                .and_then(Value::as_str)
            {
                base = v.to_string();
            }
        }
        self.matcher
            .replace_all(&base, self.replacement.as_str())
            .into_owned()
    }
}

impl Default for HostnameRule {
    fn default() -> Self {
        Self {
            from_label: String::new(),
            matcher: regex_lite::Regex::new("(.*)").unwrap_or_else(|_| unreachable!()),
            replacement: "$1".into(),
        }
    }
}

/// weftDNS as containers are given it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The server's address.
    pub server: String,
    /// The domain, with its trailing dot (`weave.local.`).
    pub domain: String,
}

/// Why a create call cannot be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// Neither the request nor the image has a command.
    #[error("No command specified")]
    NoCommand,
    /// The body is not a JSON object.
    #[error("request body is not a JSON object")]
    NotObject,
}

/// A string list field as Docker reads it: absent or null is `None`, a string is a list of
/// one, a list of strings is itself.
pub fn str_list(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => Some(
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect(),
        ),
        other => Some(vec![other.to_string()]),
    }
}

/// `HostConfig.NetworkMode` and `Env` of a create body.
pub fn mode_and_env(body: &Value) -> (String, Vec<String>) {
    let mode = body
        .pointer("/HostConfig/NetworkMode")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    (mode, str_list(body.get("Env")).unwrap_or_default())
}

/// The image whose entrypoint and command must be looked up first: `Some` when the request
/// has no `Entrypoint`.
pub fn image_to_inspect(body: &Value) -> Option<String> {
    if str_list(body.get("Entrypoint")).is_some() {
        return None;
    }
    Some(
        body.get("Image")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    )
}

/// Rewrites a create body for a container the proxy handles. `wait_dir` is the host directory
/// bound at `/w`; `image` the image's entrypoint and command when [`image_to_inspect`] asked
/// for them; `name` the `?name=` parameter; `dns` weftDNS unless `--without-dns` or DNS is off.
/// Returns a warning to log, if any.
pub fn rewrite_create(
    body: &mut Value,
    wait_dir: &str,
    image: Option<(Vec<String>, Vec<String>)>,
    name: Option<&str>,
    rule: &HostnameRule,
    dns: Option<&DnsSettings>,
) -> Result<Option<String>, RewriteError> {
    let obj = body.as_object_mut().ok_or(RewriteError::NotObject)?;
    // (2) The entrypoint, first: it may fail.
    let mut entrypoint = str_list(obj.get("Entrypoint"));
    let mut cmd = str_list(obj.get("Cmd"));
    if entrypoint.is_none() {
        let (e, c) = image.unwrap_or_default();
        entrypoint = Some(e);
        if cmd.is_none() {
            cmd = Some(c);
        }
    }
    let entrypoint = entrypoint.unwrap_or_default();
    let cmd = cmd.unwrap_or_default();
    if entrypoint.is_empty() && cmd.is_empty() {
        return Err(RewriteError::NoCommand);
    }
    let mut wrapped = vec![WAIT_BIN.to_string()];
    wrapped.extend(entrypoint);
    obj.insert("Entrypoint".into(), json!(wrapped));
    obj.insert("Cmd".into(), json!(cmd));
    // (1) The /w bind.
    let host_config = obj
        .entry("HostConfig")
        .or_insert_with(|| Value::Object(Map::new()));
    if !host_config.is_object() {
        *host_config = Value::Object(Map::new());
    }
    let hc = host_config.as_object_mut().ok_or(RewriteError::NotObject)?;
    bind_wait_dir(hc, wait_dir);
    let Some(dns) = dns else {
        return Ok(None);
    };
    // (3) The hostname.
    let labels = obj.get("Labels").and_then(Value::as_object).cloned();
    let derived = rule.derive(name, labels.as_ref());
    let domain = dns.domain.trim_end_matches('.');
    let mut warning = None;
    let has_hostname = obj
        .get("Hostname")
        .and_then(Value::as_str)
        .is_some_and(|h| !h.is_empty());
    let mut named = has_hostname;
    if !has_hostname && !derived.is_empty() {
        if derived.len() + 1 + domain.len() > MAX_HOSTNAME {
            warning = Some(format!(
                "Container name [{derived}] too long to be used as hostname"
            ));
        } else {
            obj.insert("Hostname".into(), json!(derived));
            obj.insert("Domainname".into(), json!(domain));
            named = true;
        }
    }
    // (4) weftDNS.
    let hc = obj
        .get_mut("HostConfig")
        .and_then(Value::as_object_mut)
        .ok_or(RewriteError::NotObject)?;
    add_dns(hc, dns, named);
    Ok(warning)
}

/// Binds `wait_dir` at `/w` read-only, replacing any other bind there.
fn bind_wait_dir(hc: &mut Map<String, Value>, wait_dir: &str) {
    let mut binds: Vec<String> = str_list(hc.get("Binds"))
        .unwrap_or_default()
        .into_iter()
        .filter(|b| b.split(':').nth(1) != Some(WAIT_DIR))
        .collect();
    binds.push(format!("{wait_dir}:{WAIT_DIR}:ro"));
    hc.insert("Binds".into(), json!(binds));
}

/// weftDNS as a DNS server, and the search domain unless one is given: `.` for a container
/// with a hostname of its own (`named`), the weftDNS domain otherwise.
fn add_dns(hc: &mut Map<String, Value>, dns: &DnsSettings, named: bool) {
    let mut servers = str_list(hc.get("Dns")).unwrap_or_default();
    if !servers.contains(&dns.server) {
        servers.push(dns.server.clone());
    }
    hc.insert("Dns".into(), json!(servers));
    if str_list(hc.get("DnsSearch")).unwrap_or_default().is_empty() {
        let search = if named { "." } else { dns.domain.as_str() };
        hc.insert("DnsSearch".into(), json!([search]));
    }
}

/// The host directories an old-style start may bind at `/w`.
#[derive(Debug, Clone, Copy)]
pub struct WaitBinds<'a> {
    /// The one create binds (`/w`, or `/w-nomcast` with `--no-multicast-route`).
    pub wait: &'a str,
    /// `/w-noop`: weavewait waits for nothing.
    pub noop: &'a str,
}

/// The HostConfig an old-style start call (Docker API < 1.24) carries: the body's `HostConfig`
/// object, or else the body itself when it has any field (Docker reads both forms; as in
/// Weave Net, any top-level field is taken to mean a HostConfig is there).
fn start_host_config(body: &mut Value) -> Option<&mut Map<String, Value>> {
    let obj = body.as_object_mut()?;
    if obj.contains_key("HostConfig") {
        return obj.get_mut("HostConfig")?.as_object_mut();
    }
    (!obj.is_empty()).then_some(obj)
}

/// Rewrites the body of an old-style start of a container created through the proxy. Its
/// HostConfig replaces the one create gave the container, so what create added comes back:
/// the `/w` bind and weftDNS (`dns`, for a container `named` as at create). A network mode the
/// proxy does not attach (`host`, `container:…`, a plugin's network) gets the `/w-noop` bind
/// alone: no weave interface is coming for weavewait to wait for. Returns whether there was
/// a HostConfig to rewrite.
pub fn rewrite_start(
    body: &mut Value,
    dirs: WaitBinds<'_>,
    dns: Option<&DnsSettings>,
    named: bool,
) -> bool {
    let Some(hc) = start_host_config(body) else {
        return false;
    };
    let mode = hc.get("NetworkMode").and_then(Value::as_str).unwrap_or("");
    if matches!(
        weave_cidrs(mode, &[], false),
        Err(CidrError::NetworkMode(_))
    ) {
        bind_wait_dir(hc, dirs.noop);
        return true;
    }
    bind_wait_dir(hc, dirs.wait);
    if let Some(dns) = dns {
        add_dns(hc, dns, named);
    }
    true
}

/// Whether create gave a container a hostname of its own (given, or derived from its name with
/// the domain set) rather than Docker's default, the first digits of its ID: what `named` was
/// for (4) at create.
pub fn has_own_hostname(id: &str, hostname: &str, domainname: &str) -> bool {
    !domainname.is_empty() || !(hostname.is_empty() || id.starts_with(hostname))
}

/// Puts `/w/w` in front of an exec's `Cmd`.
pub fn rewrite_exec(body: &mut Value) -> Result<(), RewriteError> {
    let obj = body.as_object_mut().ok_or(RewriteError::NotObject)?;
    let mut cmd = vec![WAIT_BIN.to_string()];
    cmd.extend(str_list(obj.get("Cmd")).unwrap_or_default());
    obj.insert("Cmd".into(), json!(cmd));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns() -> DnsSettings {
        DnsSettings {
            server: "172.17.0.1".into(),
            domain: "weave.local.".into(),
        }
    }

    #[test]
    fn create_with_a_name_and_a_command() {
        let mut b = json!({
            "Image": "busybox", "Cmd": ["sleep", "1"], "Entrypoint": null,
            "HostConfig": {"Binds": ["/a:/b", "/old:/w:ro"], "Dns": null}
        });
        let img = Some((vec!["/init".to_string()], vec!["sh".to_string()]));
        let w = rewrite_create(
            &mut b,
            "/run/weft/w",
            img,
            Some("web"),
            &HostnameRule::default(),
            Some(&dns()),
        );
        assert_eq!(w, Ok(None));
        assert_eq!(b["Entrypoint"], json!(["/w/w", "/init"]));
        assert_eq!(b["Cmd"], json!(["sleep", "1"]));
        assert_eq!(
            b["HostConfig"]["Binds"],
            json!(["/a:/b", "/run/weft/w:/w:ro"])
        );
        assert_eq!(b["Hostname"], json!("web"));
        assert_eq!(b["Domainname"], json!("weave.local"));
        assert_eq!(b["HostConfig"]["Dns"], json!(["172.17.0.1"]));
        assert_eq!(b["HostConfig"]["DnsSearch"], json!(["."]));
    }

    #[test]
    fn create_without_name_keeps_given_entrypoint() {
        let mut b = json!({"Image": "x", "Entrypoint": "/bin/app", "Hostname": ""});
        assert_eq!(image_to_inspect(&b), None);
        rewrite_create(
            &mut b,
            "/d",
            None,
            None,
            &HostnameRule::default(),
            Some(&dns()),
        )
        .unwrap();
        assert_eq!(b["Entrypoint"], json!(["/w/w", "/bin/app"]));
        assert_eq!(b["Cmd"], json!([]));
        assert_eq!(b["Hostname"], json!(""));
        assert_eq!(b["HostConfig"]["DnsSearch"], json!(["weave.local."]));
        assert_eq!(b["HostConfig"]["Binds"], json!(["/d:/w:ro"]));
    }

    #[test]
    fn create_given_hostname_and_search_are_kept() {
        let mut b = json!({"Image": "x", "Cmd": ["a"], "Hostname": "h",
            "HostConfig": {"Dns": ["8.8.8.8"], "DnsSearch": ["example.com"]}});
        assert_eq!(image_to_inspect(&b), Some("x".into()));
        rewrite_create(
            &mut b,
            "/d",
            Some((vec![], vec![])),
            Some("n"),
            &HostnameRule::default(),
            Some(&dns()),
        )
        .unwrap();
        assert_eq!(b["Hostname"], json!("h"));
        assert!(b.get("Domainname").is_none());
        assert_eq!(b["HostConfig"]["Dns"], json!(["8.8.8.8", "172.17.0.1"]));
        assert_eq!(b["HostConfig"]["DnsSearch"], json!(["example.com"]));
        assert_eq!(b["Entrypoint"], json!(["/w/w"]));
    }

    #[test]
    fn create_without_dns_and_errors() {
        let mut b = json!({"Image": "x", "Cmd": ["a"]});
        rewrite_create(
            &mut b,
            "/d",
            None,
            Some("n"),
            &HostnameRule::default(),
            None,
        )
        .unwrap();
        assert!(b.get("Hostname").is_none());
        assert!(b["HostConfig"].get("Dns").is_none());
        let mut b = json!({"Image": "x"});
        assert_eq!(
            rewrite_create(
                &mut b,
                "/d",
                Some((vec![], vec![])),
                None,
                &HostnameRule::default(),
                None
            ),
            Err(RewriteError::NoCommand)
        );
        assert_eq!(
            rewrite_create(
                &mut json!([1]),
                "/d",
                None,
                None,
                &HostnameRule::default(),
                None
            ),
            Err(RewriteError::NotObject)
        );
        let mut b = json!({"Image": "x", "Cmd": ["a"], "HostConfig": 5});
        rewrite_create(&mut b, "/d", None, None, &HostnameRule::default(), None).unwrap();
        assert_eq!(b["HostConfig"]["Binds"], json!(["/d:/w:ro"]));
    }

    #[test]
    fn long_names_only_warn() {
        let long = "x".repeat(60);
        let mut b = json!({"Image": "x", "Cmd": ["a"]});
        let w = rewrite_create(
            &mut b,
            "/d",
            None,
            Some(&long),
            &HostnameRule::default(),
            Some(&dns()),
        )
        .unwrap();
        assert_eq!(
            w,
            Some(format!(
                "Container name [{long}] too long to be used as hostname"
            ))
        );
        assert!(b.get("Hostname").is_none());
        assert_eq!(b["HostConfig"]["DnsSearch"], json!(["weave.local."]));
    }

    #[test]
    fn hostname_rules() {
        let d = HostnameRule::default();
        assert_eq!(d.derive(Some("web"), None), "web");
        assert_eq!(d.derive(None, None), "");
        let r = HostnameRule::new("", "^aws-[0-9]+-(.*)$", "my-app-$1").unwrap();
        assert_eq!(r.derive(Some("aws-12798186823-foo"), None), "my-app-foo");
        assert_eq!(r.derive(Some("other"), None), "other");
        let l = HostnameRule::new("hostname", "(.*)", "$1").unwrap();
        let labels = json!({"hostname": "fromlabel"});
        assert_eq!(l.derive(Some("n"), labels.as_object()), "fromlabel");
        assert_eq!(l.derive(Some("n"), None), "n");
        assert!(HostnameRule::new("", "(", "").is_err());
    }

    const DIRS: WaitBinds<'static> = WaitBinds {
        wait: "/run/weft/w",
        noop: "/run/weft/w-noop",
    };

    #[test]
    fn old_style_start_gets_the_bind_and_dns_again() {
        // A HostConfig at the top level, as Docker clients before 1.24 sent it.
        let mut b = json!({"Binds": ["/a:/b", "/x:/w"], "Dns": ["8.8.8.8"], "Privileged": false});
        assert!(rewrite_start(&mut b, DIRS, Some(&dns()), false));
        assert_eq!(b["Binds"], json!(["/a:/b", "/run/weft/w:/w:ro"]));
        assert_eq!(b["Dns"], json!(["8.8.8.8", "172.17.0.1"]));
        assert_eq!(b["DnsSearch"], json!(["weave.local."]));
        assert_eq!(b["Privileged"], json!(false));
        // Under `HostConfig`; the rest of the body is left as it is.
        let mut b = json!({"HostConfig": {"DnsSearch": ["example.com"]}, "X": 1});
        assert!(rewrite_start(&mut b, DIRS, Some(&dns()), true));
        assert_eq!(
            b,
            json!({"HostConfig": {"Binds": ["/run/weft/w:/w:ro"], "Dns": ["172.17.0.1"],
                "DnsSearch": ["example.com"]}, "X": 1})
        );
        let mut b = json!({"NetworkMode": "bridge"});
        assert!(rewrite_start(&mut b, DIRS, Some(&dns()), true));
        assert_eq!(b["DnsSearch"], json!(["."]));
        // Without weftDNS, the bind alone.
        let mut b = json!({"PublishAllPorts": true});
        assert!(rewrite_start(&mut b, DIRS, None, true));
        assert_eq!(
            b,
            json!({"PublishAllPorts": true, "Binds": ["/run/weft/w:/w:ro"]})
        );
    }

    #[test]
    fn old_style_start_elsewhere_gets_the_noop_bind() {
        for mode in ["host", "container:abc", "mynet"] {
            let mut b = json!({"HostConfig": {"NetworkMode": mode, "Binds": ["/a:/b"]}});
            assert!(rewrite_start(&mut b, DIRS, Some(&dns()), true));
            assert_eq!(
                b["HostConfig"],
                json!({"NetworkMode": mode, "Binds": ["/a:/b", "/run/weft/w-noop:/w:ro"]}),
                "{mode}"
            );
        }
    }

    #[test]
    fn start_without_a_host_config_is_left_alone() {
        for body in [
            json!({}),
            json!(null),
            json!([1]),
            json!({"HostConfig": null}),
        ] {
            let mut b = body.clone();
            assert!(!rewrite_start(&mut b, DIRS, Some(&dns()), true), "{body}");
            assert_eq!(b, body);
        }
    }

    #[test]
    fn own_hostnames() {
        let id = "0123456789ab0123456789ab";
        assert!(!has_own_hostname(id, "0123456789ab", ""));
        assert!(!has_own_hostname(id, "", ""));
        assert!(has_own_hostname(id, "web", ""));
        assert!(has_own_hostname(id, "web", "weave.local"));
    }

    #[test]
    fn exec_gets_weavewait() {
        let mut b = json!({"Cmd": ["ip", "addr"], "AttachStdout": true});
        rewrite_exec(&mut b).unwrap();
        assert_eq!(b["Cmd"], json!(["/w/w", "ip", "addr"]));
        assert!(rewrite_exec(&mut json!("x")).is_err());
    }

    #[test]
    fn mode_and_env_of_a_body() {
        let b = json!({"Env": ["A=1", "WEAVE_CIDR=none"], "HostConfig": {"NetworkMode": "host"}});
        assert_eq!(
            mode_and_env(&b),
            (
                "host".to_string(),
                vec!["A=1".to_string(), "WEAVE_CIDR=none".to_string()]
            )
        );
        assert_eq!(mode_and_env(&json!({})), (String::new(), vec![]));
    }
}
