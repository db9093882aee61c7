//! Test support: real etcd servers and per-backend fixtures.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use tug_testkit::etcd::{EtcdServer, shared_etcd};

use tempfile::TempDir;
use tug_store::Store;
use tug_store::etcd::EtcdStore;
use tug_store::sqlite::SqliteStore;

/// Runs blocking setup (starting etcd) from async test code.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// How a conformance test gets at a backend.
pub trait Fixture {
    /// A new handle on the backend's (persistent) store. For SQLite at most
    /// one handle may be open at a time.
    fn open(&self) -> impl std::future::Future<Output = Arc<dyn Store>>;
    /// Restarts the server process, if the backend has one. All handles must
    /// have been dropped.
    fn restart(&self) -> impl std::future::Future<Output = ()> {
        async {}
    }
}

/// A fresh SQLite database in its own temp directory.
pub struct SqliteFixture {
    dir: TempDir,
}

impl SqliteFixture {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("tug-sqlite-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }
}

impl Fixture for SqliteFixture {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(self.db_path()).expect("open sqlite store"))
    }
}

/// A client of the shared etcd.
pub struct EtcdSharedFixture {
    url: String,
}

impl EtcdSharedFixture {
    pub fn new() -> Self {
        Self {
            url: blocking(|| shared_etcd().url.clone()),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Fixture for EtcdSharedFixture {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(
            EtcdStore::connect(std::slice::from_ref(&self.url))
                .await
                .expect("connect to shared etcd"),
        )
    }
}

/// An etcd of its own, for tests that compact or restart it.
pub struct EtcdIsolatedFixture {
    // Field order matters: stop the server before its directory goes.
    server: Mutex<Option<EtcdServer>>,
    dir: TempDir,
}

impl EtcdIsolatedFixture {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tug-etcd-")
            .tempdir()
            .expect("temp dir");
        let server = blocking(|| EtcdServer::start(dir.path(), false));
        Self {
            server: Mutex::new(Some(server)),
            dir,
        }
    }

    fn url(&self) -> String {
        self.server
            .lock()
            .unwrap()
            .as_ref()
            .expect("etcd running")
            .url
            .clone()
    }
}

impl Fixture for EtcdIsolatedFixture {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(
            EtcdStore::connect(&[self.url()])
                .await
                .expect("connect to etcd"),
        )
    }

    async fn restart(&self) {
        let old = self.server.lock().unwrap().take();
        blocking(|| drop(old));
        let server = blocking(|| EtcdServer::start(self.dir.path(), false));
        *self.server.lock().unwrap() = Some(server);
    }
}
