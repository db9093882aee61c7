//! End to end: a ResourceQuota made with `kubectl create quota` limits what
//! the real kubectl can create in a real `tug server` (its controllers and
//! admission), as upstream's would.

use std::time::{Duration, Instant};

use tug_testkit::{Backend, TugServer};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(s: &TugServer, args: &[&str]) -> String {
    let out = s.kubectl(args);
    assert!(out.status.success(), "kubectl {args:?} failed:\nstdout: {}\nstderr: {}\nserver log:\n{}", text(&out.stdout), text(&out.stderr), s.log());
    text(&out.stdout)
}

fn fails(s: &TugServer, args: &[&str]) -> String {
    let out = s.kubectl(args);
    assert!(!out.status.success(), "kubectl {args:?} should have failed:\n{}", text(&out.stdout));
    text(&out.stderr)
}

#[test]
fn kubectl_create_quota_limits_creates() {
    let s = TugServer::start(env!("CARGO_BIN_EXE_tug").as_ref(), Backend::Sqlite);
    ok(&s, &["create", "namespace", "team"]);
    ok(&s, &["create", "quota", "small", "-n", "team", "--hard=pods=2,count/configmaps=1"]);
    // The controller counts the namespace first; until then the quota limits nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let used = ok(&s, &["get", "quota", "small", "-n", "team", "-o", "jsonpath={.status.used.pods}"]);
        if used == "0" {
            break;
        }
        assert!(Instant::now() < deadline, "the quota was never counted:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(&s, &["run", "one", "-n", "team", "--image=busybox:1.36", "--restart=Never"]);
    ok(&s, &["run", "two", "-n", "team", "--image=busybox:1.36", "--restart=Never"]);
    let err = fails(&s, &["run", "three", "-n", "team", "--image=busybox:1.36", "--restart=Never"]);
    assert!(err.contains("pods \"three\" is forbidden: exceeded quota: small, requested: pods=1, used: pods=2, limited: pods=2"), "{err}");
    assert!(err.contains("(Forbidden)"), "{err}");
    ok(&s, &["create", "configmap", "c1", "-n", "team"]);
    let err = fails(&s, &["create", "configmap", "c2", "-n", "team"]);
    assert!(err.contains("exceeded quota: small, requested: count/configmaps=1, used: count/configmaps=1, limited: count/configmaps=1"), "{err}");
    // kubectl shows the usage against the limits.
    let table = ok(&s, &["get", "quota", "small", "-n", "team"]);
    assert!(table.contains("pods: 2/2") && table.contains("count/configmaps: 1/1"), "{table}");
    // Other namespaces are not limited.
    ok(&s, &["run", "three", "--image=busybox:1.36", "--restart=Never"]);
}
