//! Pod volumes on the node: emptyDir (a directory under the pod's dir, or a
//! tmpfs for `medium: Memory`), hostPath (with its type checks),
//! persistentVolumeClaim (the claim's bound PV's `hostPath` or `local` path,
//! mounted as a hostPath volume), configMap,
//! secret and downwardAPI (files written under the pod's dir), and the
//! configMap/secret/downwardAPI sources of projected volumes. Each becomes
//! a bind mount (CRI Mount) of the containers that mount it. The files of
//! configMap, secret, downwardAPI and projected volumes are written as
//! upstream's AtomicWriter does (a `..data` symlink swapped to a new
//! timestamped directory), and [`prepare`] run again on a running pod
//! updates them in place: the pod worker does so periodically. Service
//! account tokens (projected `serviceAccountToken`) are not issued yet:
//! such a source is skipped.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, PersistentVolume,
    PersistentVolumeClaim, Pod, Secret,
};
use kube::api::Api;

use crate::spec::{meta, pod_spec};

/// The host directory of each volume, by volume name.
pub type Volumes = HashMap<String, PathBuf>;

fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    // Atomic for readers inside the container (the directory is what is
    // bind-mounted, so a rename is seen there).
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("f")
    ));
    std::fs::write(&tmp, data)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

/// Files of a configMap/secret volume: every key, or the listed items.
fn key_files(
    data: &BTreeMap<String, Vec<u8>>,
    items: &Option<Vec<KeyToPath>>,
    default_mode: u32,
) -> Result<Vec<(String, Vec<u8>, u32)>, String> {
    match items {
        None => Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), default_mode))
            .collect()),
        Some(items) => items
            .iter()
            .map(|i| {
                let v = data
                    .get(&i.key)
                    .ok_or_else(|| format!("key {} not found", i.key))?;
                Ok((
                    i.path.clone(),
                    v.clone(),
                    i.mode.map(|m| m as u32).unwrap_or(default_mode),
                ))
            })
            .collect(),
    }
}

fn safe_rel(p: &str) -> bool {
    !p.is_empty() && !p.starts_with('/') && !p.split('/').any(|c| c == "..")
}

/// Where the current payload of an atomically written volume is (a symlink
/// to a timestamped directory), as upstream's AtomicWriter names it.
pub const DATA_DIR_LINK: &str = "..data";

/// Writes the files of a configMap, secret, downwardAPI or projected volume
/// the way upstream's AtomicWriter does, so that a running container sees an
/// update all at once: the payload goes into a new `..<timestamp>` directory,
/// the `..data` symlink is swapped to it with one rename, and every
/// top-level name is a symlink through `..data`. Nothing is written when
/// the payload is unchanged; returns whether it changed.
fn write_all(dir: &Path, files: &[(String, Vec<u8>, u32)]) -> Result<bool, String> {
    for (rel, _, _) in files {
        if !safe_rel(rel) {
            return Err(format!("invalid path {rel:?}"));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut wanted: Vec<(String, Vec<u8>, u32)> = files.to_vec();
    wanted.sort_by(|a, b| a.0.cmp(&b.0));
    wanted.dedup_by(|a, b| a.0 == b.0);
    let data_link = dir.join(DATA_DIR_LINK);
    let old_target = std::fs::read_link(&data_link).ok();
    if old_target.is_some() && current_payload(&data_link) == wanted {
        return Ok(false);
    }
    // The new payload.
    let stamp = {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("..{}_{:09}", d.as_secs(), d.subsec_nanos())
    };
    let ts_dir = dir.join(&stamp);
    std::fs::create_dir(&ts_dir).map_err(|e| format!("creating {}: {e}", ts_dir.display()))?;
    for (rel, data, mode) in &wanted {
        write_file(&ts_dir.join(rel), data, *mode).map_err(|e| format!("writing {rel}: {e}"))?;
    }
    // The swap: a fresh symlink renamed over `..data`.
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link).map_err(|e| format!("symlink: {e}"))?;
    std::fs::rename(&tmp_link, &data_link).map_err(|e| format!("renaming ..data: {e}"))?;
    // User-visible names: a symlink each through `..data`; stale ones go.
    let top: std::collections::BTreeSet<String> = wanted
        .iter()
        .filter_map(|(rel, _, _)| rel.split('/').next().map(String::from))
        .collect();
    for name in &top {
        let link = dir.join(name);
        let target = Path::new(DATA_DIR_LINK).join(name);
        if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
            continue;
        }
        // A regular file or directory of the layout before (plain files).
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&link).map_err(|e| e.to_string())?,
            Ok(_) => std::fs::remove_file(&link).map_err(|e| e.to_string())?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target, &link).map_err(|e| format!("symlink {name}: {e}"))?;
    }
    for e in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        let stale = if name.starts_with("..") {
            // Old payloads (and leftovers of an interrupted write).
            name != DATA_DIR_LINK && name != stamp
        } else {
            !top.contains(&name)
        };
        if stale {
            if p.is_dir() && !p.is_symlink() {
                let _ = std::fs::remove_dir_all(&p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    Ok(true)
}

/// The payload `..data` points at: (relative path, content, mode), sorted.
fn current_payload(data_link: &Path) -> Vec<(String, Vec<u8>, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![(data_link.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let Ok(m) = std::fs::symlink_metadata(e.path()) else { continue };
            if m.is_dir() {
                stack.push((e.path(), rel));
            } else if let Ok(data) = std::fs::read(e.path()) {
                out.push((rel, data, m.permissions().mode() & 0o7777));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
) -> Result<Vec<(String, Vec<u8>, u32)>, String> {
    let (ns, name, uid) = meta(pod);
    let fmt_map = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut out = Vec::new();
    for i in items {
        let Some(f) = &i.field_ref else { continue };
        let v = match f.field_path.as_str() {
            "metadata.name" => name.to_string(),
            "metadata.namespace" => ns.to_string(),
            "metadata.uid" => uid.to_string(),
            "metadata.labels" => fmt_map(&pod.metadata.labels),
            "metadata.annotations" => fmt_map(&pod.metadata.annotations),
            p => {
                if let Some(k) = p
                    .strip_prefix("metadata.labels['")
                    .and_then(|k| k.strip_suffix("']"))
                {
                    pod.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(k))
                        .cloned()
                        .unwrap_or_default()
                } else if let Some(k) = p
                    .strip_prefix("metadata.annotations['")
                    .and_then(|k| k.strip_suffix("']"))
                {
                    pod.metadata
                        .annotations
                        .as_ref()
                        .and_then(|l| l.get(k))
                        .cloned()
                        .unwrap_or_default()
                } else {
                    return Err(format!("unsupported downwardAPI fieldPath {p:?}"));
                }
            }
        };
        out.push((
            i.path.clone(),
            v.into_bytes(),
            i.mode.map(|m| m as u32).unwrap_or(default_mode),
        ));
    }
    Ok(out)
}

fn cm_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut d: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    d.extend(
        cm.binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone())),
    );
    d
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut d: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    d.extend(
        s.string_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
    );
    d
}

/// Whether `path` is a mount point.
fn is_mounted(path: &Path) -> bool {
    let p = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(&*p))
}

fn mount_tmpfs(path: &Path) -> Result<(), String> {
    if is_mounted(path) {
        return Ok(());
    }
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "mode=0777", "tmpfs"])
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Unmounts every mount under `dir` (tmpfs emptyDirs), deepest first.
pub fn unmount_under(dir: &Path) {
    let prefix = format!("{}/", dir.to_string_lossy());
    let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(String::from))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = std::process::Command::new("umount").arg(&p).status();
    }
}

/// A hostPath volume's directory or file, after its `type` check.
fn host_path(path: &str, type_: Option<&str>) -> Result<PathBuf, String> {
    let p = PathBuf::from(path);
    match type_.unwrap_or("") {
        "DirectoryOrCreate" => std::fs::create_dir_all(&p).map_err(|e| e.to_string())?,
        "FileOrCreate" if !p.exists() => {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&p, b"").map_err(|e| e.to_string())?;
        }
        "Directory" if !p.is_dir() => {
            return Err(format!(
                "hostPath type check failed: {} is not a directory",
                path
            ));
        }
        "File" if !p.is_file() => {
            return Err(format!(
                "hostPath type check failed: {} is not a file",
                path
            ));
        }
        _ => {}
    }
    Ok(p)
}

/// The message upstream's kubelet gives a volume it could not process
/// (`WaitForAttachAndMount`), as the FailedMount event shows it.
pub fn unable_to_mount(volume: &str, detail: &str) -> String {
    format!("Unable to attach or mount volumes: unmounted volumes=[{volume}], unattached volumes=[{volume}], failed to process volumes=[{volume}]: {detail}")
}

/// A persistentVolumeClaim volume: the claim (in the pod's namespace) →
/// its bound PersistentVolume → the PV's `hostPath` or `local` path, used
/// as a hostPath volume would be. `Err` is upstream's reason (the claim is
/// missing or not bound, the PV is missing, bound elsewhere or of a type
/// Tugboat cannot mount).
async fn claim_path(client: &kube::Client, ns: &str, claim: &str) -> Result<PathBuf, String> {
    let ctx = format!("error processing PVC {ns}/{claim}");
    let api_msg = |e: kube::Error| match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message,
        other => other.to_string(),
    };
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc = pvcs.get(claim).await.map_err(|e| format!("{ctx}: failed to fetch PVC from API server: {}", api_msg(e)))?;
    let pv_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    if pv_name.is_empty() || phase != "Bound" {
        return Err(format!("{ctx}: PVC is not bound"));
    }
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(&pv_name).await.map_err(|e| format!("{ctx}: failed to fetch PV {pv_name} from API server: {}", api_msg(e)))?;
    let spec = pv.spec.unwrap_or_default();
    let Some(r) = spec.claim_ref.as_ref() else {
        return Err(format!("{ctx}: found PV object {pv_name} but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim"));
    };
    if r.uid != pvc.metadata.uid {
        return Err(format!(
            "{ctx}: found PV object {pv_name} but its pv.Spec.ClaimRef.UID {} does not point to claim.UID {}",
            r.uid.as_deref().unwrap_or(""),
            pvc.metadata.uid.as_deref().unwrap_or("")
        ));
    }
    if let Some(h) = &spec.host_path {
        host_path(&h.path, h.type_.as_deref())
    } else if let Some(l) = &spec.local {
        let p = PathBuf::from(&l.path);
        if !p.exists() {
            return Err(format!("MountVolume.NewMounter initialization failed for volume \"{pv_name}\" : path \"{}\" does not exist", l.path));
        }
        Ok(p)
    } else {
        Err(format!("{ctx}: failed to get Plugin from volumeSpec for volume \"{pv_name}\" err=no volume plugin matched (Tugboat mounts hostPath and local volumes only)"))
    }
}

/// Sets up every volume of the pod; `Err` is the message of a FailedMount.
pub async fn prepare(client: &kube::Client, pod: &Pod, pod_dir: &Path) -> Result<Volumes, String> {
    let (ns, _, _) = meta(pod);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut out = Volumes::new();
    for v in pod_spec(pod).volumes.iter().flatten() {
        let dir = |kind: &str| pod_dir.join("volumes").join(kind).join(&v.name);
        let path = if let Some(e) = &v.empty_dir {
            let d = dir("empty-dir");
            std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
            let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777));
            if e.medium.as_deref() == Some("Memory") {
                mount_tmpfs(&d).map_err(|e| format!("mounting tmpfs for {}: {e}", v.name))?;
            }
            d
        } else if let Some(h) = &v.host_path {
            host_path(&h.path, h.type_.as_deref())?
        } else if let Some(c) = &v.persistent_volume_claim {
            claim_path(client, ns, &c.claim_name).await.map_err(|detail| unable_to_mount(&v.name, &detail))?
        } else if let Some(c) = &v.config_map {
            let mode = c.default_mode.unwrap_or(0o644) as u32;
            let d = dir("configmap");
            match cms.get_opt(&c.name).await.map_err(|e| e.to_string())? {
                Some(cm) => {
                    write_all(&d, &key_files(&cm_data(&cm), &c.items, mode)?)?;
                }
                None if c.optional.unwrap_or(false) => {
                    write_all(&d, &[])?;
                }
                None => return Err(format!("configmap \"{}\" not found", c.name)),
            }
            d
        } else if let Some(s) = &v.secret {
            let mode = s.default_mode.unwrap_or(0o644) as u32;
            let d = dir("secret");
            let name = s.secret_name.clone().unwrap_or_default();
            match secrets.get_opt(&name).await.map_err(|e| e.to_string())? {
                Some(sec) => {
                    write_all(&d, &key_files(&secret_data(&sec), &s.items, mode)?)?;
                }
                None if s.optional.unwrap_or(false) => {
                    write_all(&d, &[])?;
                }
                None => return Err(format!("secret \"{name}\" not found")),
            }
            d
        } else if let Some(d_api) = &v.downward_api {
            let d = dir("downward-api");
            let mode = d_api.default_mode.unwrap_or(0o644) as u32;
            write_all(
                &d,
                &downward_files(pod, d_api.items.as_deref().unwrap_or_default(), mode)?,
            )?;
            d
        } else if let Some(p) = &v.projected {
            let d = dir("projected");
            let mode = p.default_mode.unwrap_or(0o644) as u32;
            let mut files = Vec::new();
            for src in p.sources.iter().flatten() {
                if let Some(c) = &src.config_map {
                    match cms.get_opt(&c.name).await.map_err(|e| e.to_string())? {
                        Some(cm) => files.extend(key_files(&cm_data(&cm), &c.items, mode)?),
                        None if c.optional.unwrap_or(false) => {}
                        None => return Err(format!("configmap \"{}\" not found", c.name)),
                    }
                } else if let Some(s) = &src.secret {
                    match secrets.get_opt(&s.name).await.map_err(|e| e.to_string())? {
                        Some(sec) => files.extend(key_files(&secret_data(&sec), &s.items, mode)?),
                        None if s.optional.unwrap_or(false) => {}
                        None => return Err(format!("secret \"{}\" not found", s.name)),
                    }
                } else if let Some(da) = &src.downward_api {
                    files.extend(downward_files(
                        pod,
                        da.items.as_deref().unwrap_or_default(),
                        mode,
                    )?);
                } else {
                    tracing::debug!(volume = %v.name, "projected source not supported yet; skipped");
                }
            }
            write_all(&d, &files)?;
            d
        } else {
            tracing::debug!(volume = %v.name, "volume type not supported yet; mounting an empty directory");
            let d = dir("unsupported");
            std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
            d
        };
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// The container's bind mounts: (host path, container path, read-only).
pub fn mounts(
    pod: &Pod,
    c: &Container,
    vols: &Volumes,
) -> Result<Vec<(String, String, bool)>, String> {
    let read_only_kind = |name: &str| {
        pod_spec(pod)
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .is_some_and(|v| {
                v.config_map.is_some()
                    || v.secret.is_some()
                    || v.downward_api.is_some()
                    || v.projected.is_some()
                    || v.persistent_volume_claim.as_ref().is_some_and(|c| c.read_only == Some(true))
            })
    };
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let base = vols
            .get(&m.name)
            .ok_or_else(|| format!("volume {:?} not found", m.name))?;
        let mut host = base.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if !safe_rel(sub) {
                return Err(format!("invalid subPath {sub:?}"));
            }
            host = host.join(sub);
            if !host.exists() {
                std::fs::create_dir_all(&host).map_err(|e| e.to_string())?;
            }
        }
        let ro = m.read_only.unwrap_or(false) || read_only_kind(&m.name);
        out.push((
            host.to_string_lossy().into_owned(),
            m.mount_path.clone(),
            ro,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_files_and_items() {
        let data = BTreeMap::from([
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]);
        assert_eq!(key_files(&data, &None, 0o644).unwrap().len(), 2);
        let items = Some(vec![KeyToPath {
            key: "b".into(),
            path: "dir/b.txt".into(),
            mode: Some(0o600),
        }]);
        assert_eq!(
            key_files(&data, &items, 0o644).unwrap(),
            vec![("dir/b.txt".to_string(), b"2".to_vec(), 0o600)]
        );
        let bad = Some(vec![KeyToPath {
            key: "z".into(),
            path: "z".into(),
            mode: None,
        }]);
        assert!(key_files(&data, &bad, 0o644).is_err());
        assert!(!safe_rel("../x") && !safe_rel("/x") && safe_rel("a/b"));
    }

    #[test]
    fn atomic_writer_swaps_data() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("cm");
        let f = |v: &[(&str, &str)]| -> Vec<(String, Vec<u8>, u32)> {
            v.iter().map(|(k, x)| (k.to_string(), x.as_bytes().to_vec(), 0o644)).collect()
        };
        assert!(write_all(&d, &f(&[("a", "1"), ("dir/b", "2")])).unwrap());
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(d.join("dir/b")).unwrap(), "2");
        assert!(std::fs::symlink_metadata(d.join("a")).unwrap().is_symlink());
        let first = std::fs::read_link(d.join(DATA_DIR_LINK)).unwrap();
        // Unchanged: nothing written, same payload directory.
        assert!(!write_all(&d, &f(&[("dir/b", "2"), ("a", "1")])).unwrap());
        assert_eq!(std::fs::read_link(d.join(DATA_DIR_LINK)).unwrap(), first);
        // Changed: new payload, `a` updated, `dir` gone, `c` new, old payload removed.
        assert!(write_all(&d, &f(&[("a", "one"), ("c", "3")])).unwrap());
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(d.join("c")).unwrap(), "3");
        assert!(!d.join("dir").exists() && !d.join(&first).exists());
        let names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}"); // a, c, ..data, ..<stamp>
        // A mode change is a change.
        let mut m = f(&[("a", "one"), ("c", "3")]);
        m[0].2 = 0o600;
        assert!(write_all(&d, &m).unwrap());
        // The layout before (plain files) is replaced by links.
        let old = tmp.path().join("old");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("a"), "x").unwrap();
        assert!(write_all(&old, &f(&[("a", "y")])).unwrap());
        assert_eq!(std::fs::read_to_string(old.join("a")).unwrap(), "y");
        assert!(write_all(&old, &f(&[("../x", "y")])).is_err());
    }

    #[test]
    fn mounts_of_a_container() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "x"}},
            "spec": {
                "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}],
                "containers": [{"name": "c", "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "cfg", "mountPath": "/etc/cfg"},
                ]}],
            },
        }))
        .unwrap();
        let vols = Volumes::from([
            ("data".to_string(), PathBuf::from("/p/data")),
            ("cfg".to_string(), PathBuf::from("/p/cfg")),
        ]);
        let m = mounts(&pod, &pod.spec.as_ref().unwrap().containers[0], &vols).unwrap();
        assert_eq!(
            m,
            vec![
                ("/p/data".into(), "/data".into(), false),
                ("/p/cfg".into(), "/etc/cfg".into(), true)
            ]
        );
        let items = vec![
            serde_json::from_value(
                json!({"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}),
            )
            .unwrap(),
        ];
        let f = downward_files(&pod, &items, 0o644).unwrap();
        assert_eq!(f[0].1, b"app=\"x\"".to_vec());
    }
}
