//! Settings: the TOML config file, command-line flags and environment resolved into one
//! [`Settings`] value, with the default public infrastructure lists for users.
//!
//! Order of precedence: flags (and their environment variables) over the config file over the
//! defaults. Every server entry is validated here, so a malformed one is a usage error before any
//! network work starts. Tests never use the defaults: they pass `--offline` or their own servers.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Public MQTT brokers used for signalling when nothing else is configured.
pub const DEFAULT_BROKERS: &[&str] = &[
    "mqtt://test.mosquitto.org:1883",
    "mqtt://broker.emqx.io:1883",
    "mqtt://broker.hivemq.com:1883",
];
/// Public STUN servers used for NAT discovery when nothing else is configured.
pub const DEFAULT_STUN: &[&str] = &["stun.l.google.com:19302", "stun.cloudflare.com:3478"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("no home directory: pass --home DIR or set WARPGATE_HOME")]
    NoHome,
}

/// A `host:port` pair as the user wrote it; resolved to addresses only when used.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Parses `host:port`, `[v6]:port`, or `host` when a default port is given.
    pub fn parse(text: &str, default_port: Option<u16>) -> Option<Self> {
        let text = text.trim();
        if let Ok(sa) = text.parse::<std::net::SocketAddr>() {
            return Some(Self {
                host: sa.ip().to_string(),
                port: sa.port(),
            });
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => (h, p.parse().ok()?),
            _ => (text, default_port?),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        (valid_host && port != 0).then(|| Self {
            host: host.to_string(),
            port,
        })
    }
}

impl HostPort {
    /// `[HOST:]PORT` for a local socket: a bare port means `default_host`. Port 0 is allowed
    /// (the caller decides whether "any port" makes sense).
    pub fn parse_local(text: &str, default_host: &str) -> Option<Self> {
        match text.trim().parse::<u16>() {
            Ok(port) => Some(Self {
                host: default_host.to_string(),
                port,
            }),
            Err(_) => Self::parse(text, None),
        }
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A TURN server with long-term credentials: `turn://USER:PASS@HOST:PORT[?transport=tcp]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TurnServer {
    pub user: String,
    #[serde(skip)]
    pub password: String,
    pub server: HostPort,
    /// `?transport=tcp`: talk to the server over TCP only (otherwise UDP, then TCP if UDP is
    /// silent).
    pub tcp: bool,
}

impl TurnServer {
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix("turn://")?;
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let tcp = match query {
            None => false,
            Some("transport=tcp") => true,
            Some("transport=udp") => false,
            Some(_) => return None,
        };
        let (creds, server) = rest.rsplit_once('@')?;
        let (user, password) = creds.split_once(':')?;
        if user.is_empty() {
            return None;
        }
        let server = HostPort::parse(server, Some(3478))?;
        Some(Self {
            user: user.to_string(),
            password: password.to_string(),
            server,
            tcp,
        })
    }
}

/// Everything a subcommand needs to know about where things are.
#[derive(Clone, Debug)]
pub struct Settings {
    pub home: PathBuf,
    pub brokers: Vec<HostPort>,
    pub stun: Vec<HostPort>,
    pub turn: Vec<TurnServer>,
    pub registries: Vec<String>,
    /// Use no infrastructure at all: direct paths only.
    pub offline: bool,
    /// Ask the home gateway for port mappings (UPnP IGD, PCP, NAT-PMP) of the listen port and of the connector's punching port, and IPv6 pinholes (PCP) while listening: unless
    /// `--no-portmap`, and not `--offline` (nothing but the peer is contacted then).
    pub portmap: bool,
}

/// What the command line said about infrastructure (empty = not given).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub home: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub brokers: Vec<String>,
    pub stun: Vec<String>,
    pub turn: Vec<String>,
    pub registries: Vec<String>,
    pub offline: bool,
    pub no_portmap: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    brokers: Option<Vec<String>>,
    stun: Option<Vec<String>>,
    turn: Option<Vec<String>>,
    registries: Option<Vec<String>>,
}

impl Settings {
    pub fn resolve(o: &Overrides) -> Result<Self, ConfigError> {
        let dirs = directories::ProjectDirs::from("", "", "warpgate");
        let home = match (&o.home, &dirs) {
            (Some(h), _) => h.clone(),
            (None, Some(d)) => d.data_dir().to_path_buf(),
            (None, None) => return Err(ConfigError::NoHome),
        };
        let file = match &o.config {
            Some(path) => read_config(path)?,
            None => match &dirs {
                Some(d) if d.config_dir().join("config.toml").exists() => {
                    read_config(&d.config_dir().join("config.toml"))?
                }
                _ => FileConfig::default(),
            },
        };
        let pick =
            |flag: &Vec<String>, file: Option<Vec<String>>, default: &[&str]| -> Vec<String> {
                if !flag.is_empty() {
                    flag.clone()
                } else {
                    file.unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect())
                }
            };
        let brokers = pick(&o.brokers, file.brokers, DEFAULT_BROKERS)
            .iter()
            .map(|b| parse_broker(b))
            .collect::<Result<_, _>>()?;
        let stun = pick(&o.stun, file.stun, DEFAULT_STUN)
            .iter()
            .map(|s| {
                HostPort::parse(s, Some(3478))
                    .ok_or_else(|| invalid("STUN server", s, "expected HOST:PORT"))
            })
            .collect::<Result<_, _>>()?;
        let turn = pick(&o.turn, file.turn, &[])
            .iter()
            .map(|t| {
                TurnServer::parse(t).ok_or_else(|| {
                    invalid(
                        "TURN server",
                        t,
                        "expected turn://USER:PASS@HOST:PORT[?transport=tcp]",
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let registries = pick(&o.registries, file.registries, &[]);
        for r in &registries {
            if !(r.starts_with("http://") || r.starts_with("https://")) {
                return Err(invalid(
                    "registry",
                    r,
                    "expected an http:// or https:// URL",
                ));
            }
        }
        Ok(Self {
            home,
            brokers,
            stun,
            turn,
            registries,
            offline: o.offline,
            portmap: !o.offline && !o.no_portmap,
        })
    }
}

fn parse_broker(text: &str) -> Result<HostPort, ConfigError> {
    let rest = text.strip_prefix("mqtt://").unwrap_or(text);
    HostPort::parse(rest, Some(1883))
        .ok_or_else(|| invalid("broker", text, "expected mqtt://HOST[:PORT]"))
}

fn invalid(what: &'static str, value: &str, why: &'static str) -> ConfigError {
    ConfigError::Invalid {
        what,
        value: value.to_string(),
        why,
    }
}

fn read_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            HostPort::parse("a.b:1", None),
            Some(HostPort {
                host: "a.b".into(),
                port: 1
            })
        );
        assert_eq!(
            HostPort::parse("[::1]:5", None),
            Some(HostPort {
                host: "::1".into(),
                port: 5
            })
        );
        assert_eq!(HostPort::parse("host", Some(3478)).unwrap().port, 3478);
        assert_eq!(HostPort::parse("host", None), None);
        assert_eq!(HostPort::parse("host:0", None), None);
        assert_eq!(HostPort::parse("ho st:1", None), None);
        assert_eq!(HostPort::parse(":1", None), None);
    }

    #[test]
    fn turn_url() {
        let t = TurnServer::parse("turn://u:p@198.51.100.1:3478").unwrap();
        assert_eq!(
            (t.user.as_str(), t.password.as_str(), t.server.port),
            ("u", "p", 3478)
        );
        assert!(!t.tcp);
        let t = TurnServer::parse("turn://u:p@198.51.100.1:3478?transport=tcp").unwrap();
        assert!(t.tcp);
        assert_eq!(t.server.port, 3478);
        assert!(
            !TurnServer::parse("turn://u:p@h:1?transport=udp")
                .unwrap()
                .tcp
        );
        assert!(TurnServer::parse("turn://u:p@h:1?transport=sctp").is_none());
        assert!(TurnServer::parse("turn://nopass@h:1").is_none());
        assert!(TurnServer::parse("stun://u:p@h:1").is_none());
    }

    #[test]
    fn flags_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            "stun = [\"198.51.100.9:3478\"]\nbrokers = [\"mqtt://198.51.100.2\"]\n",
        )
        .unwrap();
        let o = Overrides {
            home: Some(dir.path().into()),
            config: Some(cfg),
            brokers: vec!["127.0.0.1:1884".into()],
            ..Default::default()
        };
        let s = Settings::resolve(&o).unwrap();
        assert_eq!(
            s.brokers,
            vec![HostPort {
                host: "127.0.0.1".into(),
                port: 1884
            }]
        );
        assert_eq!(s.stun[0].host, "198.51.100.9");
        assert!(s.turn.is_empty());
    }

    #[test]
    fn bad_entries_are_errors() {
        let o = Overrides {
            home: Some("/tmp".into()),
            turn: vec!["nonsense".into()],
            ..Default::default()
        };
        assert!(matches!(
            Settings::resolve(&o),
            Err(ConfigError::Invalid { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "bogus = 1\n").unwrap();
        let o = Overrides {
            home: Some("/tmp".into()),
            config: Some(cfg),
            ..Default::default()
        };
        assert!(matches!(
            Settings::resolve(&o),
            Err(ConfigError::Parse { .. })
        ));
    }
}
