//! A network-namespace lab for tests that need real hosts on a real network: namespaces on one
//! bridge, a VNC server (TigerVNC `Xvnc` with VNC authentication) and VNC clients (vncdotool's
//! `vncdo`) inside them, and a [`Lab`] that, dropped, stops everything it started and deletes
//! the namespaces and the bridge.
//!
//! Namespace `i` has `10.200.NET.(i+1)` on interface [`Lab::interface`]; the bridge has
//! `10.200.NET.254` on this host ([`Lab::host_ip`]), so a broker started there
//! ([`crate::Broker::start_on`]) is reachable from this host and from every namespace. Names
//! carry `NET` and the process id, so labs of different `NET`s and of different test processes
//! run side by side.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The port every lab VNC server listens on.
pub const VNC_PORT: u16 = 5900;

/// Runs `program` to completion; its stdout, or an error naming the command and its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new(program);
    command.args(args);
    output_of(command)
}

/// Runs `command` to completion; its stdout, or an error naming it with its status and stderr.
fn output_of(mut command: Command) -> Result<String, String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{command:?} ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `name` from the environment variable `env` (if given and set), PATH, or the virtual
/// environments `./dev test` and older lab scripts install vncdotool into.
fn find_program(name: &str, env: Option<&str>) -> Option<PathBuf> {
    if let Some(path) = env.and_then(std::env::var_os) {
        return Some(PathBuf::from(path));
    }
    let home_venv =
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/vncguard/venv/bin"));
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain(home_venv)
        .chain([PathBuf::from("/tmp/vnclab/venv/bin")])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// The VNC programs a lab runs.
pub struct VncTools {
    pub xvnc: PathBuf,
    pub vncpasswd: PathBuf,
    pub vncdo: PathBuf,
}

impl VncTools {
    /// The programs, or `None` once the calling test has printed that it skips and why.
    pub fn find_or_skip() -> Option<VncTools> {
        VncTools::find()
            .inspect_err(|reason| println!("SKIPPED: {reason}"))
            .ok()
    }

    /// The programs, or why a test cannot run (what to install).
    pub fn find() -> Result<VncTools, String> {
        match (
            find_program("Xvnc", None),
            find_program("vncpasswd", None),
            find_program("vncdo", Some("VNCDO")),
        ) {
            (Some(xvnc), Some(vncpasswd), Some(vncdo)) => Ok(VncTools {
                xvnc,
                vncpasswd,
                vncdo,
            }),
            _ => Err(
                "needs Xvnc and vncpasswd (apt: tigervnc-standalone-server tigervnc-tools) \
                      and vncdo (pip: vncdotool, or $VNCDO)"
                    .to_string(),
            ),
        }
    }
}

/// One element of an nftables set: the address (of a network: its first address, with its
/// `prefix` length), and the timeout and time left (seconds) when the element has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElement {
    pub address: String,
    pub prefix: Option<u8>,
    pub timeout: Option<i64>,
    pub expires: Option<i64>,
}

/// Namespaces on one bridge, the processes started in them and their logs. Dropping it (also
/// when the test fails) kills every process it started, then deletes the bridge and the
/// namespaces; logs are kept when the test failed.
pub struct Lab {
    net: u8,
    id: u32,
    bridge: String,
    namespaces: Vec<String>,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    /// [`Lab::create`], or `None` once the calling test has printed that it skips and why.
    pub fn create_or_skip(net: u8, count: usize) -> Option<Lab> {
        Lab::create(net, count)
            .inspect_err(|reason| println!("SKIPPED: {reason}"))
            .ok()
    }

    /// `count` namespaces on a bridge in `10.200.NET.0/24`; an error (most often: not root)
    /// says why it could not be built.
    pub fn create(net: u8, count: usize) -> Result<Lab, String> {
        let id = std::process::id() % 10_000;
        let dir = std::env::temp_dir().join(format!("vncguard-netns-{net}-{id}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut lab = Lab {
            net,
            id,
            bridge: format!("vgbr{net}x{id}"),
            namespaces: Vec::new(),
            dir,
            children: Vec::new(),
        };
        let failed = |e: String| format!("cannot create network namespaces (root needed): {e}");
        run("ip", &["link", "add", &lab.bridge, "type", "bridge"]).map_err(failed)?;
        let host_cidr = format!("{}/24", lab.host_ip());
        run("ip", &["addr", "add", &host_cidr, "dev", &lab.bridge]).map_err(failed)?;
        run("ip", &["link", "set", &lab.bridge, "up"]).map_err(failed)?;
        for i in 0..count {
            let ns = format!("vg-{net}-{i}-{id}");
            run("ip", &["netns", "add", &ns]).map_err(failed)?;
            lab.namespaces.push(ns.clone());
            let (inner, outer) = (lab.interface(i), format!("vgo{net}x{i}x{id}"));
            let cidr = format!("{}/24", lab.ip(i));
            for args in [
                &[
                    "link", "add", &inner, "type", "veth", "peer", "name", &outer,
                ][..],
                &["link", "set", &inner, "netns", &ns],
                &["link", "set", &outer, "master", &lab.bridge, "up"],
                &["-n", &ns, "addr", "add", &cidr, "dev", &inner],
                &["-n", &ns, "link", "set", &inner, "up"],
                &["-n", &ns, "link", "set", "lo", "up"],
            ] {
                run("ip", args).map_err(failed)?;
            }
        }
        Ok(lab)
    }

    /// The process-unique part of every name in this lab.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// This host's address on the bridge.
    pub fn host_ip(&self) -> String {
        format!("10.200.{}.254", self.net)
    }

    /// Namespace `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("10.200.{}.{}", self.net, i + 1)
    }

    /// Namespace `i`'s interface (inside it).
    pub fn interface(&self, i: usize) -> String {
        format!("vgi{}x{i}x{}", self.net, self.id)
    }

    /// Namespace `i`'s name (for `ip -n`, `ip link set ... netns`).
    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// The bridge (on this host) every namespace hangs off.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The directory of the lab's logs and files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What process output went to `log` so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// A command running `program` inside namespace `ns`, or on this host when `None`.
    pub fn command(&self, ns: Option<usize>, program: &Path) -> Command {
        match ns {
            Some(i) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", &self.namespaces[i]])
                    .arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// Starts `command` with stdout and stderr in `log`, owned by the lab; its pid.
    pub fn spawn(&mut self, mut command: Command, log: &str) -> u32 {
        let log = std::fs::File::create(self.dir.join(log)).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Runs `args` to completion inside namespace `i`; its stdout.
    pub fn run_in(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut line = vec!["netns", "exec", &self.namespaces[i]];
        line.extend_from_slice(args);
        run("ip", &line)
    }

    /// SIGKILL to the process `pid` this lab started.
    pub fn kill(&mut self, pid: u32) {
        if let Some(at) = self.children.iter().position(|c| c.id() == pid) {
            let mut child = self.children.remove(at);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM to the process `pid` this lab started; its exit status once it exited (SIGKILL
    /// after 15 s, then `None`).
    pub fn stop(&mut self, pid: u32) -> Option<ExitStatus> {
        let at = self.children.iter().position(|c| c.id() == pid)?;
        let mut child = self.children.remove(at);
        let _ = run("kill", &["-TERM", &pid.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Whether a process this lab started has exited.
    pub fn exited(&mut self, pid: u32) -> bool {
        self.children
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Whether namespace `i` can open a TCP connection to `target:port` within two seconds.
    pub fn can_connect(&self, i: usize, target: &str, port: u16) -> bool {
        let script = format!(
            "import socket; socket.create_connection(('{target}', {port}), timeout=2).close()"
        );
        self.run_in(i, &["python3", "-c", &script]).is_ok()
    }

    /// The elements of the nftables set `family table set` in namespace `i` (none when the set
    /// does not exist).
    pub fn nft_set(&self, i: usize, family: &str, table: &str, set: &str) -> Vec<SetElement> {
        let Ok(text) = self.run_in(i, &["nft", "-j", "list", "set", family, table, set]) else {
            return Vec::new();
        };
        let json: Value = serde_json::from_str(&text).expect("nft JSON");
        json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.get("set"))
            .flat_map(|set| set["elem"].as_array().cloned().unwrap_or_default())
            .filter_map(|elem| {
                // An element with a timeout is an object; a plain one is just the address; a
                // network is {"prefix": {"addr", "len"}} in either.
                let value = if elem["elem"].is_null() {
                    &elem
                } else {
                    &elem["elem"]["val"]
                };
                let (address, prefix) = match value.as_str() {
                    Some(address) => (address, None),
                    None => (
                        value["prefix"]["addr"].as_str()?,
                        value["prefix"]["len"]
                            .as_u64()
                            .and_then(|l| u8::try_from(l).ok()),
                    ),
                };
                Some(SetElement {
                    address: address.to_string(),
                    prefix,
                    timeout: elem["elem"]["timeout"].as_i64(),
                    expires: elem["elem"]["expires"].as_i64(),
                })
            })
            .collect()
    }

    /// A TigerVNC password file (in the lab's directory) for `password`.
    pub fn vnc_password_file(&self, vncpasswd: &Path, password: &str) -> PathBuf {
        let output = Command::new(vncpasswd)
            .arg("-f")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(format!("{password}\n").as_bytes())?;
                child.wait_with_output()
            })
            .expect("vncpasswd");
        let path = self.dir.join(format!("passwd-{password}"));
        std::fs::write(&path, output.stdout).expect("password file");
        path
    }

    /// `Xvnc` on display `display` in namespace `i`: 320x240, VNC authentication with
    /// `password_file`, listening on [`VNC_PORT`], no X11 over TCP; its output in
    /// `xvnc-I.log`. Returns once it listens.
    pub fn start_vnc_server(&mut self, i: usize, xvnc: &Path, password_file: &Path, display: u32) {
        let mut command = self.command(Some(i), xvnc);
        command
            .arg(format!(":{display}"))
            .args(["-geometry", "320x240", "-depth", "24"])
            .args([
                "-rfbport",
                &VNC_PORT.to_string(),
                "-SecurityTypes",
                "VncAuth",
            ])
            .arg("-PasswordFile")
            .arg(password_file)
            .args(["-nolisten", "tcp"]);
        self.spawn(command, &format!("xvnc-{i}.log"));
        let listening = format!("sport = :{VNC_PORT}");
        crate::wait_for("Xvnc listening", Duration::from_secs(20), || {
            self.run_in(i, &["ss", "-Hltn", &listening])
                .is_ok_and(|out| out.contains("LISTEN"))
        });
    }

    /// One `vncdo` run from namespace `i` to `server`, killed after `limit`: authenticate with
    /// `password`, then `actions`.
    fn vncdo_command(
        &self,
        i: usize,
        vncdo: &Path,
        session: VncSession<'_>,
        actions: &[&str],
    ) -> Command {
        let mut command = self.command(Some(i), Path::new("timeout"));
        command
            .arg(session.limit.as_secs().max(1).to_string())
            .arg(vncdo)
            .args(["-s", &format!("{}::{VNC_PORT}", session.server)])
            .args(["-p", session.password])
            .args(actions);
        command
    }

    /// One `vncdo` run (one VNC session) from namespace `i`, then `actions` (e.g.
    /// `["type", "hi"]`). Its stdout, or the error when the run failed (a wrong password, a
    /// timeout).
    pub fn vnc_client(
        &self,
        i: usize,
        vncdo: &Path,
        session: VncSession<'_>,
        actions: &[&str],
    ) -> Result<String, String> {
        output_of(self.vncdo_command(i, vncdo, session, actions))
    }

    /// Like [`Lab::vnc_client`], but in the background, owned by the lab, output in `log`;
    /// its pid.
    pub fn spawn_vnc_client(
        &mut self,
        i: usize,
        vncdo: &Path,
        session: VncSession<'_>,
        actions: &[&str],
        log: &str,
    ) -> u32 {
        let command = self.vncdo_command(i, vncdo, session, actions);
        self.spawn(command, log)
    }
}

/// Where a `vncdo` run connects, with which password, and how long it may take.
#[derive(Debug, Clone, Copy)]
pub struct VncSession<'a> {
    pub server: &'a str,
    pub password: &'a str,
    pub limit: Duration,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
        for ns in &self.namespaces {
            let _ = run("ip", &["netns", "del", ns]);
        }
        if std::thread::panicking() {
            println!("logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
