//! `t3fs local up`: supervises a local cluster made of child processes of the `t3fs` binary.
//!
//! Children run in their own process group (so a terminal's Ctrl-C reaches only this supervisor,
//! which then stops them in order: FUSE mount, meta, storage, mgmtd) and get SIGTERM if the
//! supervisor dies (`PR_SET_PDEATHSIG`). A child that exits on its own is reported and left down,
//! so a user can kill a storage server and watch the cluster react in `t3fs local status`.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use t3fs_common::proto;
use tokio::process::{Child, Command};

use super::plan::{Plan, ShapeArgs};
use super::status;

struct Daemon {
    name: String,
    child: Child,
    exited: bool,
}

/// Runs the cluster in the foreground until SIGINT/SIGTERM (or `t3fs local down`).
pub async fn up(dir: &Path, mount: Option<PathBuf>, shape: ShapeArgs) -> anyhow::Result<()> {
    let plan = Plan::load_or_create_shaped(dir, None, shape)?;
    plan.write_configs()?;
    std::fs::create_dir_all(plan.dir.join("logs"))?;
    std::fs::create_dir_all(plan.dir.join("run"))?;
    refuse_if_running(&plan)?;
    let run = plan.dir.join("run");
    let _ = std::fs::remove_file(run.join("ready"));
    std::fs::write(run.join("supervisor.pid"), format!("{}\n", std::process::id()))?;
    if let Some(m) = &mount {
        std::fs::create_dir_all(m).with_context(|| format!("creating mount point {}", m.display()))?;
    }

    // Installed before anything starts, so a stop request during start-up (SIGTERM, Ctrl-C) stops
    // what was started instead of killing the supervisor and orphaning its daemons.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut daemons: Vec<Daemon> = Vec::new();
    let startup = async {
        daemons.push(spawn(&plan, "mgmtd", &["mgmtd"], None)?);
        wait_mgmtd(&plan, &mut daemons).await?;
        for i in 1..=plan.storage.len() {
            let name = format!("storage-{i}");
            daemons.push(spawn(&plan, &name, &["storage"], None)?);
        }
        super::inproc::ensure_chain_table(&plan.cluster.mgmtd_addr, &plan.cluster.token, plan.cluster.shape).await?;
        daemons.push(spawn(&plan, "meta", &["meta"], None)?);
        wait_meta(&plan, &mut daemons).await?;
        if let Some(m) = &mount {
            daemons.push(spawn(&plan, "fuse", &["mount"], Some(m))?);
            wait_mounted(m, &mut daemons).await?;
        }
        anyhow::Ok(true)
    };
    let result = tokio::select! {
        r = startup => r,
        _ = tokio::signal::ctrl_c() => Ok(false),
        _ = term.recv() => Ok(false),
    };
    if let Ok(false) = result {
        println!("stop requested during start-up; stopping what was started");
        stop_all(&plan, &mut daemons).await;
        let _ = std::fs::remove_file(run.join("supervisor.pid"));
        return Ok(());
    }
    if let Err(e) = result {
        eprintln!(
            "t3fs local up failed: {e:#}; stopping what was started (logs in {})",
            plan.dir.join("logs").display()
        );
        stop_all(&plan, &mut daemons).await;
        let _ = std::fs::remove_file(run.join("supervisor.pid"));
        return Err(e);
    }

    print_banner(&plan, mount.as_deref(), std::process::id());
    std::fs::write(run.join("ready"), "")?;

    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => report_exits(&mut daemons),
        }
    }
    println!("stopping t3fs local cluster...");
    let _ = std::fs::remove_file(run.join("ready"));
    stop_all(&plan, &mut daemons).await;
    let _ = std::fs::remove_file(run.join("supervisor.pid"));
    println!("stopped");
    Ok(())
}

fn print_banner(plan: &Plan, mount: Option<&Path>, supervisor: u32) {
    println!("t3fs local cluster is up (data dir {})", plan.dir.display());
    println!("  {}", plan.cluster.shape);
    println!("  mgmtd {}   logs {}", plan.cluster.mgmtd_addr, plan.dir.join("logs").display());
    if let Some(m) = mount {
        println!("  mounted at {}", m.display());
    }
    println!("  status: t3fs local status --data-dir {}", plan.dir.display());
    println!("  admin:  t3fs admin --data-dir {} ls /", plan.dir.display());
    println!("  stop:   t3fs local down --data-dir {} (or Ctrl-C / SIGTERM to pid {supervisor})", plan.dir.display());
}

/// `t3fs local up --detach`: starts the supervisor in the background (its own session, output in
/// `DIR/logs/supervisor.log`), waits until the cluster is up, prints where everything is, returns.
pub async fn up_detached(dir: &Path, mount: Option<PathBuf>, shape: ShapeArgs) -> anyhow::Result<()> {
    // Validate and create the directory here, so bad options fail in the foreground.
    let plan = Plan::load_or_create_shaped(dir, None, shape)?;
    std::fs::create_dir_all(plan.dir.join("logs"))?;
    std::fs::create_dir_all(plan.dir.join("run"))?;
    refuse_if_running(&plan)?;
    let _ = std::fs::remove_file(plan.dir.join("run").join("ready"));
    let log_path = plan.dir.join("logs").join("supervisor.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let exe = std::env::current_exe().context("locating the t3fs binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["local", "up", "--data-dir"]).arg(&plan.dir);
    if let Some(m) = &mount {
        cmd.arg("--mount").arg(m);
    }
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // SAFETY: runs in the forked child before exec and only calls setsid(2) (async-signal-safe),
    // so the supervisor outlives this command and a terminal's signals do not reach it.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the supervisor")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if plan.dir.join("run").join("ready").exists() {
            break;
        }
        if let Some(st) = child.try_wait()? {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("the supervisor exited during start-up ({st}); {}:\n{}", log_path.display(), tail.join("\n"));
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the cluster did not come up within 120 s; see {}", log_path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    print_banner(&plan, mount.as_deref(), child.id());
    Ok(())
}

/// `t3fs local down`: stops the cluster of `dir` (SIGTERM to its supervisor, which unmounts and
/// stops the daemons in order) and waits for it; daemons left by a supervisor that died are
/// stopped directly. Succeeds when nothing of the cluster is running afterwards.
pub async fn down(dir: &Path) -> anyhow::Result<()> {
    let dir = dir.canonicalize().with_context(|| format!("no local cluster at {}", dir.display()))?;
    let alive = |name: &str| status::read_pid(&dir, name).filter(|&p| status::pid_alive(p));
    let mut names: Vec<String> = vec!["supervisor".into(), "fuse".into(), "meta".into()];
    if let Ok(rd) = std::fs::read_dir(dir.join("run")) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().trim_end_matches(".pid").to_string();
            if n.starts_with("storage-") {
                names.push(n);
            }
        }
    }
    names.push("mgmtd".into());
    if names.iter().all(|n| alive(n).is_none()) {
        println!("no t3fs local cluster is running in {}", dir.display());
        return Ok(());
    }
    let sup = alive("supervisor");
    let targets: Vec<(String, i32)> = match sup {
        Some(p) => vec![("supervisor".into(), p)],
        None => names.iter().filter_map(|n| alive(n).map(|p| (n.clone(), p))).collect(),
    };
    for (name, pid) in &targets {
        // SAFETY: kill(2) with a pid read from this cluster's pid file and checked alive just now.
        unsafe { libc::kill(*pid, libc::SIGTERM) };
        println!("sent SIGTERM to {name} (pid {pid})");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while names.iter().any(|n| alive(n).is_some()) {
        if tokio::time::Instant::now() > deadline {
            let left: Vec<String> = names.iter().filter(|n| alive(n).is_some()).cloned().collect();
            bail!("still running after 60 s: {}", left.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("t3fs local cluster in {} is down", dir.display());
    Ok(())
}

fn refuse_if_running(plan: &Plan) -> anyhow::Result<()> {
    for name in plan.daemon_names().iter().chain(std::iter::once(&"fuse".to_string())) {
        if let Some(pid) = status::read_pid(&plan.dir, name)
            && status::pid_alive(pid)
        {
            bail!("{name} of this cluster is already running (pid {pid}); stop the other `t3fs local up` first");
        }
    }
    Ok(())
}

fn spawn(plan: &Plan, name: &str, args: &[&str], mount: Option<&Path>) -> anyhow::Result<Daemon> {
    let exe = std::env::current_exe().context("locating the t3fs binary")?;
    let log_path = plan.dir.join("logs").join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(args).arg("--config").arg(plan.conf_path(name));
    if let Some(m) = mount {
        cmd.arg(m);
    }
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0).kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    if let Some(pid) = child.id() {
        std::fs::write(plan.dir.join("run").join(format!("{name}.pid")), format!("{pid}\n"))?;
    }
    Ok(Daemon { name: name.to_string(), child, exited: false })
}

/// Fails if any child died (with the tail of its log), so start-up errors surface at once.
fn check_alive(daemons: &mut [Daemon]) -> anyhow::Result<()> {
    for d in daemons.iter_mut() {
        if let Ok(Some(st)) = d.child.try_wait() {
            d.exited = true;
            bail!("{} exited during start-up ({st})", d.name);
        }
    }
    Ok(())
}

async fn poll_until<F, Fut>(what: &str, daemons: &mut [Daemon], mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        check_alive(daemons)?;
        if f().await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after 60 s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn routing(plan: &Plan) -> Option<proto::RoutingInfo> {
    status::fetch_routing(&plan.cluster.mgmtd_addr, &plan.cluster.token).await.ok()
}

async fn wait_mgmtd(plan: &Plan, daemons: &mut [Daemon]) -> anyhow::Result<()> {
    poll_until("mgmtd to answer", daemons, || async { routing(plan).await.is_some() }).await
}

async fn wait_meta(plan: &Plan, daemons: &mut [Daemon]) -> anyhow::Result<()> {
    poll_until("meta to register", daemons, || async {
        routing(plan).await.is_some_and(|r| {
            r.nodes.iter().any(|n| {
                n.node_type == proto::NodeType::Meta as i32 && n.status == proto::NodeStatus::HeartbeatConnected as i32
            })
        })
    })
    .await
}

async fn wait_mounted(mnt: &Path, daemons: &mut [Daemon]) -> anyhow::Result<()> {
    let mnt = mnt.canonicalize().unwrap_or_else(|_| mnt.to_path_buf());
    poll_until("the FUSE mount", daemons, || {
        let m = mnt.clone();
        async move { is_mounted(&m) }
    })
    .await
}

/// Whether `path` is a mount point (listed in /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy();
    text.lines().any(|l| l.split_whitespace().nth(4) == Some(want.as_ref()))
}

fn report_exits(daemons: &mut [Daemon]) {
    for d in daemons.iter_mut().filter(|d| !d.exited) {
        if let Ok(Some(st)) = d.child.try_wait() {
            d.exited = true;
            eprintln!("{} exited ({st}); the rest of the cluster keeps running", d.name);
        }
    }
}

/// Stops children in reverse start order: SIGTERM, then SIGKILL after 15 s.
async fn stop_all(plan: &Plan, daemons: &mut Vec<Daemon>) {
    while let Some(mut d) = daemons.pop() {
        if !d.exited
            && let Some(pid) = d.child.id()
        {
            // SAFETY: kill(2) on a pid we spawned and have not yet reaped; no memory is involved.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
            match tokio::time::timeout(Duration::from_secs(15), d.child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    eprintln!("{} did not stop within 15 s; killing it", d.name);
                    let _ = d.child.kill().await;
                }
            }
        }
        let _ = std::fs::remove_file(plan.dir.join("run").join(format!("{}.pid", d.name)));
    }
}
