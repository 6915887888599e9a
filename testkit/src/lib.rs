//! Real parts for integration tests: [`Broker`] starts a tansu Kafka-API broker on a free
//! loopback port (or any local address), [`broker_with_topics`] also a bus on it with its
//! topics, [`TestDatabase`] creates a Postgres database of its own and drops it after, [`netns::Lab`] builds network namespaces with VNC servers and clients,
//! [`workspace_binary`] finds the workspace's programs, [`browser`] runs the dashboard's browser
//! scenarios.
//!
//! `TANSU_BIN` names the broker binary (default `~/.cargo/bin/tansu`, then `tansu` on PATH);
//! `VNCGUARD_TEST_PG` names the maintenance database (default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bus::kafka::KafkaBus;
use bus::{Bus, BusArgs};
use schemas::topics::Topic;

pub mod browser;
pub mod live;
pub mod netns;
pub mod python;

/// A free TCP port on the loopback interface.
pub fn free_port() -> Result<u16> {
    free_port_on("127.0.0.1")
}

fn free_port_on(host: &str) -> Result<u16> {
    let listener =
        TcpListener::bind((host, 0)).with_context(|| format!("binding a probe port on {host}"))?;
    Ok(listener.local_addr()?.port())
}

/// Polls `ready` until it holds; panics naming `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what} not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET path` from the HTTP server at `addr` (`host:port`): the whole response, headers too
/// (a `/metrics` endpoint, in tests).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// The shared real captures (truth table in their `MANIFEST.md`): `$VNCGUARD_PCAPS`, else
/// `shared/pcaps` beside the workspace.
pub fn shared_pcaps() -> PathBuf {
    std::env::var_os("VNCGUARD_PCAPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps"))
}

/// The lab recording `file` (name with extension) of [`shared_pcaps`].
pub fn lab_capture(file: &str) -> PathBuf {
    shared_pcaps().join("lab").join(file)
}

/// The workspace binary `name`, beside the other binaries of the cargo target directory the
/// running program belongs to: a test sits in its `deps/`, a program such as a bench beside
/// them. Panics when it was not built.
pub fn workspace_binary(name: &str) -> PathBuf {
    let program = std::env::current_exe().expect("the program's own path");
    let dir = program
        .parent()
        .expect("the program sits in <target>/<profile> or its deps/");
    let profile_dir = match dir.parent() {
        Some(parent) if dir.ends_with("deps") => parent,
        _ => dir,
    };
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(path);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let path = PathBuf::from(home).join(".cargo/bin/tansu");
        if path.exists() {
            return path;
        }
    }
    PathBuf::from("tansu")
}

/// A tansu broker with in-memory storage, killed when dropped.
pub struct Broker {
    child: Child,
    host: String,
    port: u16,
    log: PathBuf,
}

/// tansu on a free loopback port and a bus on it, with `topics` created at `partitions`
/// partitions each: the set-up of every test that runs stages on Kafka.
pub async fn broker_with_topics(partitions: i32, topics: &[Topic]) -> (Broker, KafkaBus) {
    let broker = Broker::start().expect("tansu");
    let mut args = BusArgs::for_brokers(&broker.brokers());
    args.kafka_partitions = partitions;
    let bus = KafkaBus::new(&args).expect("bus");
    bus.ensure_topics(topics).await.expect("topics");
    (broker, bus)
}

impl Broker {
    /// tansu on a free loopback port.
    pub fn start() -> Result<Broker> {
        Broker::start_on("127.0.0.1")
    }

    /// tansu on a free port of `host`, an address of this machine (e.g. a lab bridge's
    /// [`netns::Lab::host_ip`], reachable from the lab's namespaces too).
    pub fn start_on(host: &str) -> Result<Broker> {
        let port = free_port_on(host)?;
        let url = format!("tcp://{host}:{port}");
        let log = std::env::temp_dir().join(format!("vncguard-tansu-{host}-{port}.log"));
        let log_file = std::fs::File::create(&log)?;
        let binary = tansu_binary();
        let child = Command::new(&binary)
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {} (install: cargo install tansu --locked --features dynostore,postgres)", binary.display()))?;
        let mut broker = Broker {
            child,
            host: host.to_string(),
            port,
            log,
        };
        broker.wait_until_listening(Duration::from_secs(30))?;
        Ok(broker)
    }

    fn wait_until_listening(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait()? {
                bail!("tansu exited with {status}: {}", self.log_tail());
            }
            if std::net::TcpStream::connect((self.host.as_str(), self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "tansu did not listen on port {} within {limit:?}: {}",
            self.port,
            self.log_tail()
        )
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The bootstrap address, `HOST:PORT`.
    pub fn brokers(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn maintenance_url() -> String {
    std::env::var("VNCGUARD_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database of its own for one test, dropped (with its connections) when this is dropped.
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    pub async fn create() -> Result<TestDatabase> {
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let name = format!(
            "vncguard_test_{}_{}_{nanos}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let admin = maintenance_url();
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to {admin} (is Postgres running?)"))?;
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        drop(client);
        let _ = connection.await;
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => bail!("VNCGUARD_TEST_PG must end in /DATABASE: {admin}"),
        };
        Ok(TestDatabase { name, url })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside or outside a runtime; a thread with its own runtime works in both.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&maintenance_url(), tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join();
    }
}
