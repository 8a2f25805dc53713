//! Child processes of the demo (the appliances): started from this same binary, logged to a file
//! each, stopped with SIGTERM (the appliance drains) and, after a deadline, SIGKILL.
//!
//! A demo killed outright (SIGKILL: no chance to stop its children) leaves no orphans: each
//! child gets `--exit-with-parent <demo pid>`, which sets `PR_SET_PDEATHSIG` in the child (see
//! `main.rs`). The kernel sends that signal when the *thread* that forked the child exits, so
//! every child is forked by one launcher thread that lives as long as the demo process
//! ([`spawn`]), never by a tokio blocking-pool thread that may retire while the child runs.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One supervised child.
#[derive(Debug)]
pub struct Proc {
    /// A short name for logs.
    pub name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Describes a child running `outpost <args...>` with extra environment variables (secrets
    /// stay off the command line); nothing starts until [`Proc::start`].
    pub fn new<'a>(
        name: &str,
        args: Vec<String>,
        log: PathBuf,
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        Proc {
            name: name.to_owned(),
            args,
            env: env
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            log,
            child: None,
        }
    }

    /// Starts the child (no-op when it is running).
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let exe = std::env::current_exe().context("locating the outpost binary")?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("--exit-with-parent")
            .arg(std::process::id().to_string())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn(cmd).with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// Whether the child is alive.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// When the child was started and has exited since: its exit status and the last line of
    /// its log (why it stopped, e.g. a port already in use).
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        let last = std::fs::read_to_string(&self.log)
            .ok()
            .and_then(|l| {
                l.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        Some(format!("{status}: {last}"))
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Only ever signals the child it started.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let Ok(None) = c.try_wait() {
            let pid = Pid::from_raw(c.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Forks `cmd` from the launcher thread (started on first use, never stopped), so that the
/// child's parent-death signal fires only when the demo process itself dies.
fn spawn(cmd: Command) -> std::io::Result<Child> {
    static LAUNCHER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let launcher = LAUNCHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("outpost-demo-launcher".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the demo's launcher thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    let sent = launcher
        .lock()
        .map_err(|_| std::io::Error::other("launcher lock poisoned"))?
        .send((cmd, reply_tx));
    sent.map_err(|_| std::io::Error::other("the launcher thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the launcher thread is gone"))?
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
