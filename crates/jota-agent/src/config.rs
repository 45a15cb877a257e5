//! The agent's configuration: `/etc/jota/agent.toml` (inside the device root). Every key has
//! a default, so an empty or missing file is a working configuration.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Default configuration file.
pub const CONFIG_FILE: &str = "/etc/jota/agent.toml";

/// The agent configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Boot-control backend: `auto`, `l4t-uefi`, `nvbootctrl`, `uboot-env`, `r32-smd`.
    pub backend: String,
    /// Where the journal, status files and downloads live (on the data partition, which
    /// neither slot owns).
    pub data_dir: String,
    /// Directory of trusted public keys (`*.pem`).
    pub keyring: String,
    /// Size of each write to a partition, KiB.
    pub write_block_kib: u32,
    /// Partition label overrides: component partition (`APP`, `kernel`, ...) → `[A label, B label]`.
    /// Without an entry the labels come from the GPT (`APP`/`APP_b`, `A_kernel`/`B_kernel` or
    /// `kernel`/`kernel_b`).
    pub labels: BTreeMap<String, [String; 2]>,
    /// Refuse bundles older than the running version (anti-downgrade; the minimum-version
    /// floor is always enforced).
    pub allow_downgrade: bool,
    /// Pre-flight thresholds (the bundle's own pre-checks apply too; the stricter wins).
    pub precheck: PreCheckConfig,
    /// Boot validation.
    pub validate: ValidateConfig,
    /// Hooks: argv lists run at stages, with `JOTA_*` environment variables.
    pub hooks: Hooks,
    /// The fleet server `jota agent run` talks to.
    pub server: ServerConfig,
    /// Application layers (bundles of files, models, containers; installed live).
    pub layers: LayersConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: "auto".into(),
            data_dir: "/data/ota".into(),
            keyring: "/etc/jota/keyring".into(),
            write_block_kib: 1024,
            labels: BTreeMap::new(),
            allow_downgrade: false,
            precheck: PreCheckConfig::default(),
            validate: ValidateConfig::default(),
            hooks: Hooks::default(),
            server: ServerConfig::default(),
            layers: LayersConfig::default(),
        }
    }
}

/// How application layers are switched and checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayersConfig {
    /// Old version directories kept per layer besides the current and the previous one.
    pub keep: u32,
    /// Container engine CLI (`docker`, `podman`, `nerdctl`).
    pub engine: Vec<String>,
    /// Run after a switch so the application picks up new files (e.g. a SIGHUP).
    pub reload: Vec<String>,
    /// Run after a switch to (re)start the application on the new container tags.
    pub restart: Vec<String>,
    /// The application's health check (exit 0 = healthy), retried until the timeout.
    pub health: Vec<String>,
    /// Seconds the health check has to pass.
    pub health_timeout_s: u64,
}

impl Default for LayersConfig {
    fn default() -> Self {
        LayersConfig {
            keep: 1,
            engine: vec!["docker".into()],
            reload: Vec::new(),
            restart: Vec::new(),
            health: Vec::new(),
            health_timeout_s: 60,
        }
    }
}

/// The fleet server and how the agent talks to it (`jota agent run`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Server URL (`https://fleet.example.com:8443`); empty: `jota agent run` refuses to start.
    pub url: String,
    /// `jota` (jota's device API) or `ddi` (a hawkBit-compatible server's DDI API).
    pub protocol: String,
    /// The fleet CA to pin at first contact (PEM; the server's DATA_DIR/tls/ca.pem). After
    /// provisioning the CA the server answered with is pinned.
    pub ca: String,
    /// A provisioning token (a factory image's), or the device's own token.
    pub provision_token: String,
    /// File holding the provisioning token instead (kept out of agent.toml).
    pub provision_token_file: String,
    /// Hardware reported at provisioning (default: the board id from the device tree).
    pub hardware: String,
    /// Poll interval when the server does not say (seconds).
    pub poll_seconds: u64,
    /// Longest wait between attempts while the server cannot be reached (seconds).
    pub max_backoff_seconds: u64,
    /// Random spread of every wait, percent (so a fleet does not poll in step).
    pub jitter_pct: u8,
    /// Telemetry report interval (seconds; 0: none).
    pub telemetry_seconds: u64,
    /// Parallel Range connections of a download.
    pub connections: usize,
    /// Reboot by itself after an update is switched (else wait for someone to reboot).
    pub reboot: bool,
    /// hawkBit tenant (protocol `ddi`).
    pub ddi_tenant: String,
    /// hawkBit target (controller) id (protocol `ddi`; default: the device id).
    pub ddi_controller_id: String,
    /// hawkBit target security token (protocol `ddi`).
    pub ddi_token: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            url: String::new(),
            protocol: "jota".into(),
            ca: "/etc/jota/fleet-ca.pem".into(),
            provision_token: String::new(),
            provision_token_file: String::new(),
            hardware: String::new(),
            poll_seconds: 300,
            max_backoff_seconds: 3600,
            jitter_pct: 20,
            telemetry_seconds: 300,
            connections: 4,
            reboot: true,
            ddi_tenant: "DEFAULT".into(),
            ddi_controller_id: String::new(),
            ddi_token: String::new(),
        }
    }
}

/// Pre-flight thresholds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreCheckConfig {
    /// Minimum battery charge, percent (devices without a battery pass).
    pub min_battery_pct: u8,
    /// Require mains/USB power to be online (devices without a power-supply class pass).
    pub require_ac: bool,
    /// Minimum free space on the data partition, MiB.
    pub min_free_space_mb: u64,
    /// sysfs power-supply class directory.
    pub power_supply_dir: String,
}

impl Default for PreCheckConfig {
    fn default() -> Self {
        PreCheckConfig {
            min_battery_pct: 0,
            require_ac: false,
            min_free_space_mb: 0,
            power_supply_dir: "/sys/class/power_supply".into(),
        }
    }
}

/// What validation does when a check fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Mark the slot bad and reboot: the firmware boots the other slot at once.
    MarkBad,
    /// Leave the slot unmarked and reboot: the retry counter decides (transient failures
    /// get another try).
    Retry,
}

/// Boot validation settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidateConfig {
    /// Overall deadline for all checks, seconds.
    pub deadline_s: u64,
    /// Hardware watchdog device fed while checks run (empty: none).
    pub watchdog: String,
    /// Seconds between watchdog keepalives.
    pub watchdog_interval_s: u64,
    /// What a failed validation does.
    pub on_failure: OnFailure,
    /// Command that reboots the device (not run on a simulated device: the simulator boots).
    pub reboot_command: Vec<String>,
    /// Health checks, all of which must pass.
    pub checks: Vec<Check>,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        ValidateConfig {
            deadline_s: 300,
            watchdog: "/dev/watchdog".into(),
            watchdog_interval_s: 10,
            on_failure: OnFailure::MarkBad,
            reboot_command: vec!["systemctl".into(), "reboot".into()],
            checks: Vec::new(),
        }
    }
}

/// One health check: exactly one of `command`, `unit`, `file`, `http`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Check {
    /// Name for reports.
    pub name: String,
    /// A command (argv) that must exit 0.
    pub command: Vec<String>,
    /// A systemd unit that must be active.
    pub unit: Option<String>,
    /// A path (file or device node) that must exist.
    pub file: Option<String>,
    /// An `http://` URL that must answer 2xx.
    pub http: Option<String>,
    /// Per-check timeout, seconds.
    pub timeout_s: Option<u64>,
}

/// Hooks (argv lists; empty = none).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hooks {
    /// Before anything is written (a failure aborts the install).
    pub pre_install: Vec<String>,
    /// After every component is written and verified, before the switch (a failure aborts).
    pub post_install: Vec<String>,
    /// After the switch and after a successful validation (informational).
    pub post_activate: Vec<String>,
    /// After an install or validation failed, or a rollback was found.
    pub on_failure: Vec<String>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("agent configuration {path}: {reason}")]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// `c` as agent.toml text.
pub fn to_toml(c: &Config) -> Result<String, toml::ser::Error> {
    toml::to_string_pretty(c)
}

impl Config {
    /// Loads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |reason: String| ConfigError {
            path: path.display().to_string(),
            reason,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(err(e.to_string())),
        };
        let c: Config = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        c.check().map_err(err)?;
        Ok(c)
    }

    /// Checks values serde cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.write_block_kib == 0 || self.write_block_kib > 64 * 1024 {
            return Err(format!(
                "write_block_kib {} is not 1..65536",
                self.write_block_kib
            ));
        }
        self.backend
            .parse::<jota_bootctl::BackendKind>()
            .map_err(|e| format!("backend: {e}"))?;
        let srv = &self.server;
        if !matches!(srv.protocol.as_str(), "jota" | "ddi") {
            return Err(format!(
                "server.protocol `{}` is not `jota` or `ddi`",
                srv.protocol
            ));
        }
        let scheme_ok = srv.url.starts_with("https://") || srv.url.starts_with("http://");
        if !srv.url.is_empty() && !scheme_ok {
            return Err(format!("server.url `{}` is not an http(s) URL", srv.url));
        }
        if srv.jitter_pct > 90 || srv.connections == 0 || srv.connections > 32 {
            return Err("server.jitter_pct is 0..90 and server.connections 1..32".into());
        }
        for c in &self.validate.checks {
            let kinds = [
                !c.command.is_empty(),
                c.unit.is_some(),
                c.file.is_some(),
                c.http.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(format!(
                    "check `{}` needs exactly one of command, unit, file, http",
                    c.name
                ));
            }
            if let Some(u) = &c.http {
                if !u.starts_with("http://") {
                    return Err(format!(
                        "check `{}`: only http:// URLs (local services) are supported, not `{u}`",
                        c.name
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_a_full_file() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            Config::load(&d.path().join("missing.toml")).unwrap(),
            Config::default()
        );
        let p = d.path().join("agent.toml");
        std::fs::write(
            &p,
            r#"
backend = "l4t-uefi"
data_dir = "/data/ota"
write_block_kib = 256
[labels]
APP = ["APP", "APP_b"]
[precheck]
min_battery_pct = 30
require_ac = true
[validate]
deadline_s = 120
on_failure = "retry"
[[validate.checks]]
name = "camera"
file = "/dev/video0"
[[validate.checks]]
name = "inference"
unit = "inference.service"
timeout_s = 20
[hooks]
post_activate = ["/usr/bin/logger", "updated"]
"#,
        )
        .unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.write_block_kib, 256);
        assert_eq!(c.validate.on_failure, OnFailure::Retry);
        assert_eq!(c.validate.checks.len(), 2);
        assert!(c.precheck.require_ac);
    }

    #[test]
    fn bad_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.toml");
        for (text, why) in [
            ("bakend = \"auto\"", "unknown field"),
            ("backend = \"grub\"", "backend"),
            ("write_block_kib = 0", "write_block_kib"),
            (
                "[[validate.checks]]\nname = \"x\"\nfile = \"/a\"\nunit = \"b\"",
                "exactly one",
            ),
            (
                "[[validate.checks]]\nname = \"x\"\nhttp = \"https://a\"",
                "http://",
            ),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = Config::load(&p).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("agent.toml"), "{text}: {e}");
        }
    }
}
