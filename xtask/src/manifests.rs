//! The Kubernetes manifests in `deploy/kubernetes/`: validated offline against the API's
//! schemas by PyPI's `kubernetes-validate` (a step of `cargo xtask test`), and held to
//! busyprobe's least-privilege rules by this module's tests (no privileged pod, host PID, only
//! the justified capabilities, a read-only root, resources, only the host paths it uses, the
//! image and arguments `cargo xtask image` builds).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};

/// Where the manifests are, from the workspace root.
pub const DIR: &str = "deploy/kubernetes";

/// The Kubernetes versions the manifests are validated against: 1.30, the first with the
/// container's `appArmorProfile`, and `None`, the newest `kubernetes-validate` knows (its
/// default).
const VERSIONS: [Option<&str>; 2] = [Some("1.30.0"), None];

/// Validates every manifest under `root`/[`DIR`] with `kubernetes-validate --strict` (unknown
/// fields are errors) for each of [`VERSIONS`]; an error when the tool is missing.
pub fn validate(root: &Path) -> Result<bool> {
    require_kubernetes_validate()?;
    let files = manifest_files(&root.join(DIR))?;
    let mut passed = true;
    for version in VERSIONS {
        let mut cmd = Command::new("kubernetes-validate");
        cmd.current_dir(root).arg("--strict");
        if let Some(v) = version {
            cmd.args(["--kubernetes-version", v]);
        }
        cmd.args(&files);
        let status = cmd.status().context("running kubernetes-validate")?;
        passed &= status.success();
    }
    Ok(passed)
}

/// Fails with how to install `kubernetes-validate` when it does not run.
fn require_kubernetes_validate() -> Result<()> {
    match Command::new("kubernetes-validate")
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => bail!(
            "`kubernetes-validate --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => bail!(
            "kubernetes-validate cannot be run ({e}): the manifests in {DIR} are not validated. \
             Install it with `pip install kubernetes-validate` (.ci/run does)"
        ),
    }
}

/// The `.yaml` files in `dir`, sorted, relative to the workspace root; at least one.
fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"));
    files.sort();
    ensure!(!files.is_empty(), "no manifest in {}", dir.display());
    Ok(files
        .into_iter()
        .map(|p| Path::new(DIR).join(p.file_name().expect("a file")))
        .collect())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::{json, Value};

    use super::*;
    use crate::{build_ebpf::workspace_root, image};

    /// The capabilities the agent's container adds, in the manifest's order. Each one was
    /// found needed by running the agent without it (the manifest's comments say what breaks).
    const CAPABILITIES: [&str; 5] = [
        "BPF",
        "PERFMON",
        "SYS_ADMIN",
        "SYS_PTRACE",
        "DAC_READ_SEARCH",
    ];

    /// The host paths the pod may mount, and whether read-only.
    const HOST_PATHS: [(&str, bool); 5] = [
        ("/sys/kernel/btf", true),
        ("/sys/kernel/tracing", true),
        ("/run/containerd/containerd.sock", true),
        ("/run/busyprobe", false),
        ("/var/lib/busyprobe", false),
    ];

    fn manifest_text() -> String {
        let path = workspace_root().join(DIR).join("busyprobe.yaml");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every YAML document of `text`, as JSON values.
    fn documents(text: &str) -> Vec<Value> {
        serde_yaml::Deserializer::from_str(text)
            .map(|doc| Value::deserialize(doc).expect("valid YAML"))
            .filter(|v| !v.is_null())
            .collect()
    }

    /// What breaks busyprobe's rules in `docs` (a manifest's documents) and its `text` (for
    /// the comments): one sentence each; empty when all hold.
    fn violations(docs: &[Value], text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for doc in docs {
            privileged_anywhere(doc, "", &mut found);
        }
        let daemonsets: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "DaemonSet").collect();
        let [ds] = daemonsets[..] else {
            found.push(format!("{} DaemonSets, not one", daemonsets.len()));
            return found;
        };
        let namespace = &ds["metadata"]["namespace"];
        if !docs
            .iter()
            .any(|d| d["kind"] == "Namespace" && d["metadata"]["name"] == *namespace)
        {
            found.push(format!("no Namespace {namespace} in the manifest"));
        }
        let pod = &ds["spec"]["template"]["spec"];
        if pod["hostPID"] != true {
            found.push("hostPID is not true".into());
        }
        if pod["automountServiceAccountToken"] != false {
            found.push("a service account token is mounted (busyprobe needs none)".into());
        }
        let Some(containers) = pod["containers"].as_array().filter(|c| !c.is_empty()) else {
            found.push("no containers".into());
            return found;
        };
        if pod["initContainers"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
        {
            found.push("init containers (none is needed)".into());
        }
        for c in containers {
            container_violations(c, &mut found);
        }
        host_path_violations(pod, containers, &mut found);
        found.extend(uncommented_capabilities(text));
        found
    }

    /// Every `privileged: true` in `v`, at any depth.
    fn privileged_anywhere(v: &Value, at: &str, found: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let here = format!("{at}.{k}");
                    if k == "privileged" && *child == true {
                        found.push(format!("{here} is true"));
                    }
                    privileged_anywhere(child, &here, found);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    privileged_anywhere(child, &format!("{at}[{i}]"), found);
                }
            }
            _ => {}
        }
    }

    /// A container's security context, resources, image and arguments.
    fn container_violations(c: &Value, found: &mut Vec<String>) {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        let caps = &sc["capabilities"];
        if caps["drop"] != json!(["ALL"]) {
            found.push(format!(
                "{name}: capabilities.drop is {}, not [ALL]",
                caps["drop"]
            ));
        }
        if caps["add"] != json!(CAPABILITIES) {
            found.push(format!(
                "{name}: capabilities.add is {}, not {CAPABILITIES:?}",
                caps["add"]
            ));
        }
        if sc["readOnlyRootFilesystem"] != true {
            found.push(format!("{name}: the root filesystem is not read-only"));
        }
        if sc["allowPrivilegeEscalation"] != false {
            found.push(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                if !c["resources"][kind][resource].is_string() {
                    found.push(format!("{name}: no resources.{kind}.{resource}"));
                }
            }
        }
        if c["image"] != json!(image::reference()) {
            found.push(format!(
                "{name}: image {} is not what `cargo xtask image` builds ({})",
                c["image"],
                image::reference()
            ));
        }
        if !c["command"].is_null() {
            found.push(format!("{name}: a command replaces the image's entrypoint"));
        }
        if c["args"] != json!(image::AGENT_ARGS) {
            found.push(format!(
                "{name}: args {} are not the image's (image::AGENT_ARGS)",
                c["args"]
            ));
        }
    }

    /// The host paths: none is `/`, each is one of [`HOST_PATHS`] and mounted read-only when
    /// that says so.
    fn host_path_violations(pod: &Value, containers: &[Value], found: &mut Vec<String>) {
        let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
        for v in &volumes {
            let Some(path) = v["hostPath"]["path"].as_str() else {
                continue;
            };
            let volume = v["name"].as_str().unwrap_or("?");
            if path.trim_end_matches('/').is_empty() {
                found.push(format!("volume {volume} mounts the host's /"));
                continue;
            }
            let Some((_, read_only)) = HOST_PATHS.iter().find(|(p, _)| *p == path) else {
                found.push(format!(
                    "volume {volume}: host path {path} is not one busyprobe uses"
                ));
                continue;
            };
            for c in containers {
                let mounts = c["volumeMounts"].as_array().cloned().unwrap_or_default();
                for m in mounts.iter().filter(|m| m["name"] == volume) {
                    if *read_only && m["readOnly"] != true {
                        found.push(format!(
                            "{path} is mounted writable; busyprobe only reads it"
                        ));
                    }
                }
            }
        }
    }

    /// Each added capability must have a comment right above it (its justification).
    fn uncommented_capabilities(text: &str) -> Vec<String> {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        CAPABILITIES
            .iter()
            .filter(|cap| {
                let item = format!("- {cap}");
                let at = lines.iter().position(|l| *l == item);
                !at.is_some_and(|i| i > 0 && lines[i - 1].starts_with('#'))
            })
            .map(|cap| format!("capability {cap} has no comment above it saying why"))
            .collect()
    }

    /// The capabilities busyprobe itself checks for at start (`NEEDED` in
    /// probe-user/src/kernel/privileges.rs), read from its source.
    fn checked_at_start() -> Vec<String> {
        let path = workspace_root().join("probe-user/src/kernel/privileges.rs");
        let src = std::fs::read_to_string(&path).unwrap();
        let start = src.find("pub const NEEDED").expect("NEEDED is declared");
        let block = &src[start..start + src[start..].find("];").expect("NEEDED ends")];
        block
            .split("Capability::CAP_")
            .skip(1)
            .map(|s| s.split(',').next().unwrap().trim().to_owned())
            .collect()
    }

    #[test]
    fn the_daemonset_keeps_to_least_privilege() {
        let text = manifest_text();
        let docs = documents(&text);
        assert_eq!(violations(&docs, &text), Vec::<String>::new());
    }

    #[test]
    fn the_daemonset_grants_what_busyprobe_checks_for_at_start() {
        let needed = checked_at_start();
        assert!(needed.len() >= 3, "{needed:?}");
        for cap in &needed {
            assert!(CAPABILITIES.contains(&cap.as_str()), "{cap} is not granted");
        }
    }

    #[test]
    fn the_probes_ask_the_metrics_port_the_agent_binds() {
        let docs = documents(&manifest_text());
        let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
        let c = &ds["spec"]["template"]["spec"]["containers"][0];
        let at = image::AGENT_ARGS
            .iter()
            .position(|a| *a == "--metrics")
            .unwrap();
        let addr = image::AGENT_ARGS[at + 1];
        for probe in ["readinessProbe", "livenessProbe"] {
            let get = &c[probe]["httpGet"];
            assert_eq!(
                format!("{}:{}", get["host"].as_str().unwrap(), get["port"]),
                addr,
                "{probe}"
            );
            assert_eq!(get["path"], "/metrics", "{probe}");
        }
    }

    /// Sets the field at `pointer` in `doc`, adding it to its parent object when missing.
    fn set(doc: &mut Value, pointer: &str, value: Value) {
        if let Some(slot) = doc.pointer_mut(pointer) {
            *slot = value;
            return;
        }
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        doc.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("no object at {parent}"))
            .insert(key.into(), value);
    }

    /// Each rule catches its breach: a manifest changed in one place has a violation.
    #[test]
    fn every_rule_catches_a_breach() {
        let text = manifest_text();
        let docs = documents(&text);
        let ds_at = docs.iter().position(|d| d["kind"] == "DaemonSet").unwrap();
        let container = "/spec/template/spec/containers/0";
        let breaches: Vec<(&str, String, Value)> = vec![
            (
                "privileged",
                format!("{container}/securityContext/privileged"),
                json!(true),
            ),
            (
                "hostPID",
                "/spec/template/spec/hostPID".into(),
                json!(false),
            ),
            (
                "capabilities.add",
                format!("{container}/securityContext/capabilities/add"),
                json!([
                    "BPF",
                    "PERFMON",
                    "SYS_ADMIN",
                    "SYS_PTRACE",
                    "DAC_READ_SEARCH",
                    "NET_ADMIN"
                ]),
            ),
            (
                "capabilities.drop",
                format!("{container}/securityContext/capabilities/drop"),
                json!(["NET_RAW"]),
            ),
            (
                "read-only",
                format!("{container}/securityContext/readOnlyRootFilesystem"),
                json!(false),
            ),
            (
                "allowPrivilegeEscalation",
                format!("{container}/securityContext/allowPrivilegeEscalation"),
                json!(true),
            ),
            (
                "resources.limits.memory",
                format!("{container}/resources/limits"),
                json!({"cpu": "1"}),
            ),
            (
                "mounts the host's /",
                "/spec/template/spec/volumes/4/hostPath/path".into(),
                json!("/"),
            ),
            (
                "not one busyprobe uses",
                "/spec/template/spec/volumes/4/hostPath/path".into(),
                json!("/etc"),
            ),
            (
                "mounted writable",
                format!("{container}/volumeMounts/0/readOnly"),
                json!(false),
            ),
            (
                "image",
                format!("{container}/image"),
                json!("busyprobe:latest"),
            ),
            (
                "args",
                format!("{container}/args/2"),
                json!("/tmp/unmounts.jsonl"),
            ),
            (
                "entrypoint",
                format!("{container}/command"),
                json!(["/bin/sh"]),
            ),
        ];
        for (expect, pointer, value) in breaches {
            let mut changed = docs.clone();
            set(&mut changed[ds_at], &pointer, value);
            let found = violations(&changed, &text);
            assert!(
                found.iter().any(|v| v.contains(expect)),
                "changing {pointer} gave {found:?}, none about {expect}"
            );
        }
        // The justification above `- BPF` taken away.
        let mut lines: Vec<&str> = text.lines().collect();
        let at = lines.iter().position(|l| l.trim() == "- BPF").unwrap();
        let mut from = at;
        while lines[from - 1].trim_start().starts_with('#') {
            from -= 1;
        }
        assert!(from < at, "- BPF has a comment to take away");
        lines.drain(from..at);
        assert!(
            violations(&docs, &lines.join("\n"))
                .iter()
                .any(|v| v.contains("BPF has no comment")),
            "a capability without its comment passed"
        );
    }
}
