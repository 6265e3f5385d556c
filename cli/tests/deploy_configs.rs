//! The config files under deploy/ parse with the daemons' real config types and pass their
//! validation, so they can never drift from the code: the templates in deploy/config, every config
//! of the Docker Compose cluster in deploy/docker/config (the type comes from the file name), and the
//! TOML examples in docs/deploy.md.
//!
//! No Docker engine runs in CI and no YAML crate is in the dependency tree, so
//! deploy/docker/compose.yaml is checked line by line for what can silently break: it stays within
//! the simple block-style subset it is written in (no tabs, two-space indents, known top-level keys);
//! every `./config/*.toml` it mounts exists and is mounted read-only, every config file is mounted
//! somewhere, every `/etc/t3fs/..` path a service's command names is mounted into that service, every
//! named volume and `depends_on` entry is declared; and the configs agree with the services that
//! mount them: one token, unique node and target ids, `mgmtd_addr` naming the mgmtd service, and each
//! meta/storage/mgmtd advertising its own service name (the address it registers with mgmtd).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn template(name: &str) -> PathBuf {
    repo().join("deploy/config").join(name)
}

fn docker_dir() -> PathBuf {
    repo().join("deploy/docker")
}

#[test]
fn deploy_templates_parse() {
    let m: t3fs_mgmtd::Config = t3fs_common::config::load(&template("mgmtd.toml")).unwrap();
    m.validate().unwrap();
    let me: t3fs_meta::Config = t3fs_common::config::load(&template("meta.toml")).unwrap();
    me.validate().unwrap();
    let s: t3fs_storage::Config = t3fs_common::config::load(&template("storage.toml")).unwrap();
    s.validate().unwrap();
    assert_eq!(s.targets.len(), 2);
    let _f: t3fs_fuse::MountConfig = t3fs_common::config::load(&template("fuse.toml")).unwrap();
}

/// One parsed and validated config file.
enum Parsed {
    Mgmtd(t3fs_mgmtd::Config),
    Meta(t3fs_meta::Config),
    Storage(t3fs_storage::Config),
    Fuse(t3fs_fuse::MountConfig),
}

impl Parsed {
    fn token(&self) -> &str {
        match self {
            Parsed::Mgmtd(c) => &c.token,
            Parsed::Meta(c) => &c.token,
            Parsed::Storage(c) => &c.token,
            Parsed::Fuse(c) => &c.token,
        }
    }

    fn node_id(&self) -> Option<u32> {
        match self {
            Parsed::Mgmtd(c) => Some(c.node_id),
            Parsed::Meta(c) => Some(c.node_id),
            Parsed::Storage(c) => Some(c.node_id),
            Parsed::Fuse(_) => None,
        }
    }

    fn mgmtd_addr(&self) -> Option<&str> {
        match self {
            Parsed::Mgmtd(_) => None,
            Parsed::Meta(c) => Some(&c.mgmtd_addr),
            Parsed::Storage(c) => Some(&c.mgmtd_addr),
            Parsed::Fuse(c) => Some(&c.mgmtd_addr),
        }
    }

    /// The `host:port` addresses this daemon registers with mgmtd (must name its own service).
    fn advertised(&self) -> Vec<&str> {
        match self {
            Parsed::Mgmtd(c) => vec![c.advertise.as_deref().unwrap_or(&c.listen)],
            Parsed::Meta(c) => vec![&c.listen],
            Parsed::Storage(c) => vec![&c.listen, &c.bulk_listen],
            Parsed::Fuse(_) => vec![],
        }
    }
}

/// Parses `path` with the config type its file name starts with, and validates it.
fn parse_by_name(path: &Path) -> Parsed {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path.file_name().and_then(|n| n.to_str()).expect("utf-8 file name");
    parse_named(name, &text, &path.display().to_string())
}

/// Parses `text` with the config type `name` starts with (mgmtd, meta, storage, fuse) and validates
/// it; `what` names the source in panic messages.
fn parse_named(name: &str, text: &str, what: &str) -> Parsed {
    fn load<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> T {
        t3fs_common::config::parse(text).unwrap_or_else(|e| panic!("{what}: {e:?}"))
    }
    if name.starts_with("mgmtd") {
        let c: t3fs_mgmtd::Config = load(text, what);
        c.validate().unwrap_or_else(|e| panic!("{what}: {e:?}"));
        Parsed::Mgmtd(c)
    } else if name.starts_with("meta") {
        let c: t3fs_meta::Config = load(text, what);
        c.validate().unwrap_or_else(|e| panic!("{what}: {e:?}"));
        Parsed::Meta(c)
    } else if name.starts_with("storage") {
        let c: t3fs_storage::Config = load(text, what);
        c.validate().unwrap_or_else(|e| panic!("{what}: {e:?}"));
        Parsed::Storage(c)
    } else if name.starts_with("fuse") {
        Parsed::Fuse(load(text, what))
    } else {
        panic!("{what}: no config type for {name:?} (start it with mgmtd, meta, storage or fuse)");
    }
}

/// Every `deploy/docker/config/*.toml`, by file name.
fn docker_configs() -> BTreeMap<String, Parsed> {
    let dir = docker_dir().join("config");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.insert(name, parse_by_name(&path));
        }
    }
    out
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// What compose.yaml says about one service.
#[derive(Default, Debug)]
struct Service {
    /// `(source, target, read_only)` of each bind mount of a `./config/..` file.
    config_mounts: Vec<(String, String, bool)>,
    /// Named volumes mounted.
    volumes: Vec<String>,
    /// `/etc/t3fs/..` paths named anywhere else in the service (commands).
    etc_paths: Vec<String>,
    depends_on: Vec<String>,
}

/// The parts of compose.yaml the checks need, read line by line. Panics (failing the test) on
/// anything outside the block-style subset the file is written in.
struct Compose {
    services: BTreeMap<String, Service>,
    declared_volumes: BTreeSet<String>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// `/etc/t3fs/..` paths in `text` (up to a quote, space, colon or bracket).
fn etc_paths(text: &str) -> Vec<String> {
    text.match_indices("/etc/t3fs/")
        .map(|(i, _)| text[i..].split(['"', '\'', ' ', ':', ']', ',']).next().unwrap_or_default().to_string())
        .collect()
}

fn parse_compose(text: &str) -> Compose {
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    let mut declared_volumes = BTreeSet::new();
    let mut top = String::new();
    let mut current: Option<String> = None;
    let mut key = String::new(); // the current key at service level (indent 4)
    let mut scalar_indent: Option<usize> = None; // inside a `|` block scalar opened at this indent
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        assert!(!line.contains('\t'), "compose.yaml:{n}: tab character");
        assert_eq!(line, line.trim_end(), "compose.yaml:{n}: trailing whitespace");
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let ind = indent(line);
        if let Some(open) = scalar_indent {
            if ind > open {
                if let Some(s) = current.as_ref().and_then(|c| services.get_mut(c)) {
                    s.etc_paths.extend(etc_paths(trimmed));
                }
                continue;
            }
            scalar_indent = None;
        }
        assert_eq!(ind % 2, 0, "compose.yaml:{n}: odd indentation");
        if trimmed.ends_with('|') {
            scalar_indent = Some(ind);
        }
        if ind == 0 {
            let k = trimmed.split(':').next().unwrap_or_default();
            assert!(
                ["services", "volumes", "networks"].contains(&k) || k.starts_with("x-"),
                "compose.yaml:{n}: unexpected top-level key {k:?}"
            );
            top = k.to_string();
            current = None;
            continue;
        }
        match top.as_str() {
            "services" if ind == 2 => {
                let name = trimmed.strip_suffix(':').unwrap_or_else(|| panic!("compose.yaml:{n}: expected `name:`"));
                assert!(
                    name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                    "compose.yaml:{n}: service name {name:?}"
                );
                assert!(services.insert(name.to_string(), Service::default()).is_none(), "duplicate service {name}");
                current = Some(name.to_string());
            }
            "services" => {
                let s = services.get_mut(current.as_ref().expect("inside a service")).expect("known service");
                if ind == 4 {
                    let (k, v) = trimmed.split_once(':').unwrap_or_else(|| panic!("compose.yaml:{n}: expected `key:`"));
                    key = k.to_string();
                    if key == "depends_on" && !v.trim().is_empty() {
                        let list = v.trim().strip_prefix('[').and_then(|v| v.strip_suffix(']'));
                        let list = list.unwrap_or_else(|| panic!("compose.yaml:{n}: depends_on: [a, b] expected"));
                        s.depends_on.extend(list.split(',').map(|d| d.trim().to_string()));
                    }
                    if key != "volumes" {
                        s.etc_paths.extend(etc_paths(v));
                    }
                } else if key == "volumes" && ind == 6 {
                    let item = trimmed.strip_prefix("- ").unwrap_or_else(|| panic!("compose.yaml:{n}: `- volume`"));
                    let parts: Vec<&str> = item.split(':').collect();
                    if item.starts_with("./config/") {
                        assert!(parts.len() >= 2, "compose.yaml:{n}: source:target expected");
                        let ro = parts.get(2) == Some(&"ro");
                        s.config_mounts.push((parts[0].to_string(), parts[1].to_string(), ro));
                    } else if !item.starts_with('.') && !item.starts_with('/') {
                        s.volumes.push(parts[0].to_string());
                    }
                } else if key == "depends_on" && ind == 6 && trimmed.ends_with(':') {
                    s.depends_on.push(trimmed.trim_end_matches(':').to_string());
                } else if key != "volumes" {
                    s.etc_paths.extend(etc_paths(trimmed));
                }
            }
            "volumes" if ind == 2 => {
                declared_volumes.insert(trimmed.trim_end_matches(':').to_string());
            }
            _ => {}
        }
    }
    Compose { services, declared_volumes }
}

#[test]
fn docker_configs_parse_and_agree() {
    let configs = docker_configs();
    let kinds = |f: fn(&Parsed) -> bool| configs.values().filter(|c| f(c)).count();
    assert_eq!(kinds(|c| matches!(c, Parsed::Mgmtd(_))), 1, "one mgmtd config");
    assert_eq!(kinds(|c| matches!(c, Parsed::Meta(_))), 1, "one meta config");
    assert_eq!(kinds(|c| matches!(c, Parsed::Storage(_))), 3, "three storage configs");
    assert_eq!(kinds(|c| matches!(c, Parsed::Fuse(_))), 1, "one FUSE config");

    let tokens: BTreeSet<&str> = configs.values().map(Parsed::token).collect();
    assert_eq!(tokens.len(), 1, "one cluster token in every config: {tokens:?}");
    assert!(!tokens.iter().next().unwrap().is_empty(), "the token is set");

    let mut node_ids = BTreeSet::new();
    for (name, c) in &configs {
        if let Some(id) = c.node_id() {
            assert!(node_ids.insert(id), "{name}: node id {id} used twice");
        }
    }
    let mut target_ids = BTreeSet::new();
    for (name, c) in &configs {
        if let Parsed::Storage(s) = c {
            assert_eq!(s.targets.len(), 2, "{name}: two targets (one per volume)");
            for t in &s.targets {
                assert!(target_ids.insert(t.id), "{name}: target id {} used twice", t.id);
            }
        }
    }
}

#[test]
fn compose_mounts_existing_configs_and_names_services_consistently() {
    let dir = docker_dir();
    let text = std::fs::read_to_string(dir.join("compose.yaml")).unwrap();
    let compose = parse_compose(&text);
    let configs = docker_configs();
    let expected = ["mgmtd", "meta", "storage-1", "storage-2", "storage-3", "init", "client"];
    let names: BTreeSet<&str> = compose.services.keys().map(String::as_str).collect();
    assert_eq!(names, expected.into_iter().collect::<BTreeSet<_>>(), "compose services");

    let mut mounted = BTreeSet::new();
    for (name, s) in &compose.services {
        for (src, _, ro) in &s.config_mounts {
            assert!(dir.join(src).is_file(), "service {name} mounts {src}, which does not exist");
            assert!(*ro, "service {name} mounts {src} writable; configs are mounted :ro");
            mounted.insert(src.trim_start_matches("./config/").to_string());
        }
        for p in &s.etc_paths {
            assert!(
                s.config_mounts.iter().any(|(_, dst, _)| dst == p),
                "service {name} uses {p} but does not mount it"
            );
        }
        for v in &s.volumes {
            assert!(compose.declared_volumes.contains(v), "service {name}: volume {v} is not declared");
        }
        for d in &s.depends_on {
            assert!(compose.services.contains_key(d), "service {name} depends on unknown service {d}");
        }
    }
    let files: BTreeSet<String> = configs.keys().cloned().collect();
    assert_eq!(mounted, files, "every deploy/docker/config file is mounted, and only those");

    // The configs a service mounts agree with the compose service names (the hostnames).
    let mgmtd_service = compose
        .services
        .iter()
        .find(|(_, s)| s.config_mounts.iter().any(|(src, _, _)| src == "./config/mgmtd.toml"))
        .map(|(n, _)| n.clone())
        .expect("a service mounts mgmtd.toml");
    for (name, s) in &compose.services {
        for (src, _, _) in &s.config_mounts {
            let c = &configs[src.trim_start_matches("./config/")];
            if let Some(addr) = c.mgmtd_addr() {
                for a in addr.split(',') {
                    assert_eq!(host_of(a.trim()), mgmtd_service, "{src}: mgmtd_addr {addr:?}");
                }
            }
            for a in c.advertised() {
                assert_eq!(
                    host_of(a),
                    name,
                    "{src} (service {name}) registers {a:?}; other containers reach it by name"
                );
            }
        }
    }
}

#[test]
fn compose_parser_rejects_what_it_must() {
    let ok = "services:\n  a:\n    volumes:\n      - ./config/x.toml:/etc/t3fs/x.toml:ro\n      - v:/data\n\
              volumes:\n  v:\n";
    let c = parse_compose(ok);
    assert_eq!(c.services["a"].config_mounts, vec![("./config/x.toml".into(), "/etc/t3fs/x.toml".into(), true)]);
    assert_eq!(c.services["a"].volumes, vec!["v".to_string()]);
    assert!(c.declared_volumes.contains("v"));
    for bad in ["services:\n\ta:\n", "services:\n   a:\n", "servics:\n  a:\n", "services:\n  A_b:\n"] {
        assert!(std::panic::catch_unwind(|| parse_compose(bad)).is_err(), "accepted {bad:?}");
    }
    let scalar = "services:\n  a:\n    command:\n      - |\n        t3fs --config /etc/t3fs/y.toml\n";
    assert_eq!(parse_compose(scalar).services["a"].etc_paths, vec!["/etc/t3fs/y.toml".to_string()]);
}

/// docs/deploy.md's TOML examples parse too: each ```toml block has the type of the last
/// `/etc/t3fs/NAME.toml` the text names before it.
#[test]
fn deploy_doc_examples_parse() {
    let doc = std::fs::read_to_string(repo().join("docs/deploy.md")).unwrap();
    let mut seen = BTreeSet::new();
    let mut rest = doc.as_str();
    while let Some(open) = rest.find("```toml\n") {
        let before = &rest[..open];
        let body = &rest[open + "```toml\n".len()..];
        let close = body.find("```").expect("closed ```toml block");
        let name = before
            .rmatch_indices("/etc/t3fs/")
            .find_map(|(i, _)| before[i + "/etc/t3fs/".len()..].split(".toml").next())
            .expect("a /etc/t3fs/NAME.toml before the block")
            .to_string();
        let _ = parse_named(&name, &body[..close], &format!("docs/deploy.md ({name}.toml example)"));
        seen.insert(name);
        rest = &body[close + 3..];
    }
    let want = ["fuse", "meta", "mgmtd"].map(String::from);
    assert_eq!(seen, want.into_iter().collect(), "the doc shows a mgmtd, meta and FUSE config");
}

#[test]
fn dockerignore_keeps_the_workspace() {
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let rules: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert!(rules.contains(&"target/"), "the build directory stays out of the context");
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let members = manifest
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .expect("workspace members line")
        .trim_matches(['[', ']'])
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_string());
    for m in members.chain(["Cargo.toml".into(), "Cargo.lock".into()]) {
        for r in &rules {
            assert_ne!(r.trim_end_matches('/'), m, ".dockerignore excludes {m}, which the build needs");
        }
    }
}
