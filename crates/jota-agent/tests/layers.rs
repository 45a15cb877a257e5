//! Application layers (seed 001 §11): model/file directories switched by symlink and
//! containers by tag, live, with the application's health check deciding — and a failed
//! check putting everything back.
//!
//! No container engine runs here (no daemon, no registry): the engine is a shell stand-in
//! that keeps tags as files and logs every call, with the CLI shape of `docker`/`podman`
//! (`pull`, `load -i`, `image inspect --format`, `tag`).

mod common;

use common::*;
use jota_agent::AgentError;
use jota_bundle::build::{BaseKeys, Builder, ComponentSpec, NoProgress, Options, Release};
use jota_bundle::sign::Signer;
use jota_bundle::{ComponentType, SecretKey};
use std::path::{Path, PathBuf};

fn app_bundle(dir: &Path, version: &str, files: &[(&str, ComponentType, &str, &[u8])]) -> PathBuf {
    let out = dir.join(format!("app-{version}.jota"));
    let mut b = Builder::new(dir, Options::default(), BaseKeys::default()).unwrap();
    for (i, (name, kind, path, data)) in files.iter().enumerate() {
        let f = dir.join(format!("{version}-{i}"));
        std::fs::write(&f, data).unwrap();
        let mut s = ComponentSpec::new(name, *kind);
        s.path = Some(path.to_string());
        b.add(s, &f, &NoProgress).unwrap();
    }
    let key = SecretKey::load(&keys_dir().join("ed25519.key.pem")).unwrap();
    let signers: [&dyn Signer; 1] = [&key];
    b.finish(
        Release {
            version: version.into(),
            ..Release::default()
        },
        &signers,
        &out,
    )
    .unwrap();
    out
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

#[test]
fn model_layers_switch_live_keep_the_previous_and_roll_back_on_a_failed_health_check() {
    let t = tempfile::tempdir().unwrap();
    let rel = release("orin-nano-8gb", "1.0.0", false);
    let dev = device(&t.path().join("dev"), "orin-nano-8gb", &rel);
    let disk_before = std::fs::read(dev.dir.join("nvme.img")).unwrap();
    let mut c = config();
    c.layers.keep = 0;
    c.layers.reload = sh(r#"echo "$JOTA_VERSION" >> "$JOTA_ROOT/reloads""#);
    // The application is healthy unless it runs the 2024.03.03 model.
    c.layers.health = sh(r#"test "$(readlink "$JOTA_ROOT/data/models/current")" != 2024.03.03"#);
    c.layers.health_timeout_s = 2;
    let models = dev.dir.join("data/models");
    let link = || std::fs::read_link(models.join("current")).unwrap();

    for (v, ok) in [
        ("2024.03.01", true),
        ("2024.03.02", true),
        ("2024.03.03", false),
        ("2024.03.04", true),
    ] {
        let b = app_bundle(
            t.path(),
            v,
            &[
                (
                    "engine",
                    ComponentType::Model,
                    "/data/models/model.engine",
                    format!("engine {v}").as_bytes(),
                ),
                (
                    "manifest",
                    ComponentType::File,
                    "/data/models/manifest.json",
                    format!("{{\"version\":\"{v}\"}}").as_bytes(),
                ),
            ],
        );
        let r = try_install(&dev, &c, &b);
        if ok {
            let r = r.unwrap();
            assert!(r.live && !r.switched, "{r:?}");
            assert_eq!(link(), Path::new(v));
            assert_eq!(
                std::fs::read_to_string(models.join("current/model.engine")).unwrap(),
                format!("engine {v}")
            );
        } else {
            let e = r.unwrap_err();
            assert!(matches!(e, AgentError::RolledBack(_)), "{e}");
            assert_eq!(
                link(),
                Path::new("2024.03.02"),
                "back to the previous model"
            );
            assert!(!models.join(v).exists(), "the failed version is removed");
        }
    }
    // Reloaded for every switch and for the rollback.
    let reloads = std::fs::read_to_string(dev.dir.join("reloads")).unwrap();
    assert_eq!(
        reloads.lines().collect::<Vec<_>>(),
        [
            "2024.03.01",
            "2024.03.02",
            "2024.03.03",
            "2024.03.03",
            "2024.03.04"
        ]
    );
    // keep = 0: the current and the previous version remain.
    let mut left: Vec<String> = std::fs::read_dir(&models)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["2024.03.02", "2024.03.04"]);
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dev.dir.join("data/ota/layers.json")).unwrap())
            .unwrap();
    assert_eq!(st["dirs"]["/data/models"]["current"], "2024.03.04", "{st}");
    assert_eq!(st["dirs"]["/data/models"]["previous"], "2024.03.02", "{st}");
    // Nothing of the A/B system was touched.
    assert_eq!(
        std::fs::read(dev.dir.join("nvme.img")).unwrap(),
        disk_before
    );
    assert_eq!(booted(&dev).1, "1.0.0");
}

#[test]
fn container_layers_move_the_tag_and_move_it_back_when_unhealthy() {
    let t = tempfile::tempdir().unwrap();
    let rel = release("orin-nano-8gb", "1.0.0", false);
    let dev = device(&t.path().join("dev"), "orin-nano-8gb", &rel);
    let tags = t.path().join("tags");
    std::fs::create_dir_all(&tags).unwrap();
    let engine = t.path().join("engine");
    std::fs::write(
        &engine,
        format!(
            r#"#!/bin/sh
T={tags}
echo "$*" >> {log}
case "$1" in
  pull) exit 0 ;;
  load) echo "Loaded image: demo/app:from-archive" ;;
  image) f="$T/$(echo "$5" | tr / _)"; [ -f "$f" ] && cat "$f" || {{ echo "No such image: $5" >&2; exit 1; }} ;;
  tag) s="$T/$(echo "$2" | tr / _)"; if [ -f "$s" ]; then cp "$s" "$T/$(echo "$3" | tr / _)"; else echo "$2" > "$T/$(echo "$3" | tr / _)"; fi ;;
  *) exit 2 ;;
esac
"#,
            tags = tags.display(),
            log = t.path().join("engine.log").display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&engine)
        .status()
        .unwrap();
    let mut c = config();
    c.layers.engine = vec![engine.display().to_string()];
    c.layers.restart = sh("true");
    // Healthy unless the running tag points at a "bad" image.
    c.layers.health = sh(&format!(
        "! grep -q bad {}/inference:current",
        tags.display()
    ));
    c.layers.health_timeout_s = 1;
    let current = || {
        std::fs::read_to_string(tags.join("inference:current"))
            .unwrap()
            .trim()
            .to_string()
    };

    let good = app_bundle(
        t.path(),
        "app-1",
        &[(
            "inference",
            ComponentType::Container,
            "inference:current",
            b"registry.example.com/app@sha256:good1\n",
        )],
    );
    try_install(&dev, &c, &good).unwrap();
    assert_eq!(current(), "registry.example.com/app@sha256:good1");
    let bad = app_bundle(
        t.path(),
        "app-2",
        &[(
            "inference",
            ComponentType::Container,
            "inference:current",
            b"registry.example.com/app@sha256:bad2\n",
        )],
    );
    let e = try_install(&dev, &c, &bad).unwrap_err();
    assert!(matches!(e, AgentError::RolledBack(_)), "{e}");
    assert_eq!(
        current(),
        "registry.example.com/app@sha256:good1",
        "the previous image runs again"
    );
    let log = std::fs::read_to_string(t.path().join("engine.log")).unwrap();
    assert!(
        log.contains("pull registry.example.com/app@sha256:bad2"),
        "{log}"
    );
    assert!(
        log.contains("tag registry.example.com/app@sha256:good1 inference:current-jota-previous"),
        "{log}"
    );
    // A bundle whose payload is neither an image nor a reference is refused before any change.
    let junk = app_bundle(
        t.path(),
        "app-3",
        &[(
            "inference",
            ComponentType::Container,
            "inference:current",
            b"two words\n",
        )],
    );
    assert!(matches!(
        try_install(&dev, &c, &junk).unwrap_err(),
        AgentError::Rejected(_)
    ));
    assert_eq!(current(), "registry.example.com/app@sha256:good1");
}
