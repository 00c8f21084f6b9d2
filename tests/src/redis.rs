//! Redis for the tests: real `redis-server` processes on loopback ports the
//! OS picks, with their data (AOF, `appendfsync always`) in a directory the
//! test owns, so that a killed Redis restarted on the same directory comes
//! back with everything it acknowledged.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The message of every test that needs Redis and cannot find it.
const MISSING: &str = "redis-server is not installed: these tests run real Redis processes on loopback. \
     Install it (Debian: `apt-get install redis-server`; `.ci/run` does) and run the tests again";

/// One `redis-server` process; killed when dropped (its data stays in its directory).
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    cluster: bool,
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

impl RedisServer {
    /// Starts Redis with its data in `dir` (created if absent; an AOF there is loaded).
    pub fn start(dir: &Path) -> RedisServer {
        Self::spawn_on_a_free_port(dir, false)
    }

    /// Starts a Redis Cluster node (not yet joined) with its data in `dir`.
    pub fn start_cluster_node(dir: &Path) -> RedisServer {
        Self::spawn_on_a_free_port(dir, true)
    }

    /// A port found free may be taken by another test's process before
    /// Redis binds it: then Redis exits at once, and another port is tried.
    fn spawn_on_a_free_port(dir: &Path, cluster: bool) -> RedisServer {
        for _ in 0..5 {
            if let Some(server) = Self::try_spawn(dir, free_port(), cluster) {
                return server;
            }
        }
        panic!("redis-server could not bind a free loopback port in 5 tries (see {}/redis.log)", dir.display());
    }

    fn spawn(dir: &Path, port: u16, cluster: bool) -> RedisServer {
        Self::try_spawn(dir, port, cluster)
            .unwrap_or_else(|| panic!("redis-server could not listen on port {port} (see {}/redis.log)", dir.display()))
    }

    /// Starts Redis on `port` and waits for its PING; `None` when it exited (the port was taken).
    fn try_spawn(dir: &Path, port: u16, cluster: bool) -> Option<RedisServer> {
        std::fs::create_dir_all(dir).expect("redis data directory");
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .args(["--logfile", "redis.log"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if cluster {
            command.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{MISSING}"),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let mut server = RedisServer { child, port, dir: dir.to_path_buf(), cluster };
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.command(&["PING"]).as_deref() != Some("+PONG") {
            if server.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            assert!(Instant::now() < deadline, "redis-server on port {port} did not answer PING within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The PONG may have come from another test's Redis on a port ours
        // failed to bind: ours has exited by now if so.
        std::thread::sleep(Duration::from_millis(50));
        server.child.try_wait().ok().flatten().is_none().then_some(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends one command (inline protocol) and returns the first line of the
    /// answer, `None` when Redis cannot be reached.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(format!("{}\r\n", args.join(" ")).as_bytes()).ok()?;
        let mut buffer = [0u8; 4096];
        let n = stream.read(&mut buffer).ok()?;
        let text = String::from_utf8_lossy(&buffer[..n]).to_string();
        text.lines().next().map(str::to_string)
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("redis-cli: {e}; {MISSING}"));
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// SIGKILL: no chance to write anything more.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same port and directory (the AOF is replayed).
    pub fn restart(&mut self) {
        self.kill9();
        let again = Self::spawn(&self.dir.clone(), self.port, self.cluster);
        *self = again;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Cluster of `masters` nodes on loopback (no replicas).
pub struct RedisCluster {
    /// The nodes; dropping them stops the cluster.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes in `dir` and joins them with `redis-cli --cluster create`.
    pub fn start(dir: &Path, masters: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> =
            (0..masters).map(|i| RedisServer::start_cluster_node(&dir.join(format!("node-{i}")))).collect();
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("redis-cli: {e}; {MISSING}"));
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !nodes.iter().all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok")) {
            assert!(Instant::now() < deadline, "the cluster did not reach cluster_state:ok within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisCluster { nodes }
    }

    /// `redis+cluster://H1:P1,H2:P2,…`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}
