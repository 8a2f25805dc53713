//! `outpost demo`: the whole CDN on loopback.
//!
//! It packages the fixture ladders into a data directory, starts a control plane (in this
//! process, on the embedded SQLite default) and appliances (child processes of this binary, each
//! on its own loopback port with its own cache directories) in three clusters (an embedded ISP
//! cluster, an exchange and origin), loads a demo policy and a forecast, puts the packaged titles
//! at origin and lets the appliances' fleet agents fill the exchange and the embedded cluster
//! from their plans, prints one URL once the titles are placed and runs until Ctrl-C, when it
//! stops every part.
//!
//! Steering: when BIRD is installed (and not `--no-bird`), BIRD runs as the ISP's router and
//! announces the clients over BGP to the embedded and exchange appliances, the policy carries no
//! prefixes, and the URL is printed only once the control plane steers from those routes (see
//! [`bird`]); otherwise the embedded cluster's policy prefixes steer, as they would for an ISP
//! without BGP.
//!
//! It talks to the control plane only through its public router (in-process `oneshot` calls
//! reaching the same handlers a socket would) and to appliances only through their command line
//! and admin port, so it exercises the same contracts a deployment does.

mod assets;
mod bird;
mod fill;
mod procs;
mod topology;
mod web;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rand::RngCore as _;

use procs::Proc;
use topology::Topology;

/// Flags for `outpost demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory: packaged titles, the control plane's database and keys, the appliances'
    /// cache directories, logs and the player libraries. Reused by later runs.
    #[arg(long, default_value = ".outpost-demo")]
    pub data_dir: PathBuf,
    /// Port of the control plane, which also serves the player page (/demo) and the fleet page
    /// (/fleet).
    #[arg(long, default_value_t = 8700)]
    pub port: u16,
    /// First appliance port; appliance i listens on base+i and its admin listener on base+100+i.
    #[arg(long, default_value_t = 8710)]
    pub appliance_base_port: u16,
    /// Number of appliances in the embedded ISP cluster.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub appliances: u16,
    /// Do not fetch the player libraries (Shaka Player, hls.js, dash.js) with npm; the player
    /// page then cannot play, but every API and the fleet page work.
    #[arg(long)]
    pub no_browser_assets: bool,
    /// Lifetime of the grants in session URLs, seconds; each session heartbeat returns fresh
    /// ones (the player page swaps them into request URLs).
    #[arg(long = "grant-ttl", default_value_t = 3 * 3600, value_parser = clap::value_parser!(u64).range(10..=21600))]
    pub grant_ttl: u64,
    /// Directory holding the media fixtures (`ladder-h264/`, `ladder-vp9/`) [default: the build
    /// checkout's `fixtures/media`, else the package's /usr/share/outpost/demo/media].
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
    /// Do not run BIRD even when it is installed: the embedded cluster's policy prefixes steer
    /// instead of the routes BIRD announces over BGP.
    #[arg(long)]
    pub no_bird: bool,
}

/// How long BIRD's sessions may take to be established and steer before the demo falls back to
/// policy prefixes.
const BGP_LIMIT: Duration = Duration::from_secs(20);

/// Where the Debian package installs the demo media (packaging/, `[package.metadata.deb]`).
const PACKAGED_FIXTURES: &str = "/usr/share/outpost/demo/media";

/// The media fixtures: `--fixtures`, else the build checkout's (a source build), else the
/// package's (an installed binary on another machine).
fn fixtures_dir(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_owned());
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/media");
    for dir in [checkout.as_path(), Path::new(PACKAGED_FIXTURES)] {
        if dir.join("ladder-h264").is_dir() {
            return Ok(dir.to_owned());
        }
    }
    anyhow::bail!(
        "no demo media: neither {} nor {PACKAGED_FIXTURES} exists; pass --fixtures DIR",
        checkout.display()
    )
}

/// Runs the demo.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run_async(args))?;
    Ok(ExitCode::SUCCESS)
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    protocol::hex::encode(&b)
}

/// The demo's directories.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Root.
    pub root: PathBuf,
    /// Packaged titles.
    pub titles: PathBuf,
    /// The control plane's data directory.
    pub control_plane: PathBuf,
    /// npm project for the player libraries.
    pub web: PathBuf,
    /// Logs of the child processes.
    pub logs: PathBuf,
}

impl Dirs {
    fn new(root: &Path) -> anyhow::Result<Dirs> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("resolving {}", root.display()))?;
        let d = Dirs {
            titles: root.join("titles"),
            control_plane: root.join("control-plane"),
            web: root.join("web"),
            logs: root.join("logs"),
            root,
        };
        for p in [&d.titles, &d.control_plane, &d.logs] {
            std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        }
        Ok(d)
    }
}

async fn run_async(args: Args) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    // Ctrl-C or SIGTERM, caught from the start: while the demo starts and while it runs.
    let shutdown = super::shutdown_signal();
    tokio::pin!(shutdown);
    let dirs = Dirs::new(&args.data_dir)?;
    let repackaged = assets::ensure_titles(&fixtures_dir(args.fixtures.as_deref())?, &dirs.titles)?;
    let modules = if args.no_browser_assets {
        None
    } else {
        Some(assets::ensure_player_libraries(&dirs.web)?)
    };

    // The control plane, in this process, on the embedded SQLite default.
    let secret = random_hex(16);
    let api_secret = random_hex(24);
    let topo = Topology::new(
        &dirs.root,
        args.appliance_base_port,
        args.appliances,
        &secret,
    );
    let config = control_plane::Config {
        listen: format!("127.0.0.1:{}", args.port),
        data_dir: dirs.control_plane.clone(),
        admin_token: Some(control_plane::config::Secret(random_hex(24))),
        appliance_heartbeat_secs: 2,
        appliance_offline_after_secs: 6,
        steering_ttl_secs: 10,
        lease_secs: 60,
        heartbeat_interval_secs: (args.grant_ttl / 2).clamp(5, 15),
        grant_ttl_secs: args.grant_ttl,
        fleet_view_public: true,
        // Plans are fetched every few seconds so a newcomer watches fill converge at once (a
        // plan made before origin reported its titles names no source yet).
        fill: control_plane::config::FillConfig {
            plan_refresh_secs: 5,
            plan_cache_secs: 2,
            ..control_plane::config::FillConfig::default()
        },
        ..control_plane::Config::default()
    };
    // BIRD as the ISP's router, when installed: started before the policy is written, which
    // leaves the client prefixes to BGP only when BIRD runs.
    let (bird, mut steering) = start_bird(&args, &dirs, &topo).await;
    let policy = dirs.control_plane.join("demo-policy.toml");
    std::fs::write(&policy, topo.policy_toml(&api_secret, bird.is_none()))
        .with_context(|| format!("writing {}", policy.display()))?;
    let mut imports = vec![policy.clone()];
    for t in &assets::TITLES {
        imports.push(dirs.titles.join(t.id).join("catalog.json"));
    }
    // Content keys go to the control plane only (sealed at rest there), never to appliances.
    imports.extend(
        assets::TITLES
            .iter()
            .filter_map(|t| t.keys_file(&dirs.titles)),
    );
    let forecast = dirs.control_plane.join("demo-forecast.json");
    std::fs::write(&forecast, fill::forecast_json())
        .with_context(|| format!("writing {}", forecast.display()))?;
    imports.push(forecast);
    let import_refs: Vec<&Path> = imports.iter().map(PathBuf::as_path).collect();
    control_plane::import_files(&config, &import_refs)
        .await
        .context("loading the demo policy and catalog into the control plane")?;

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| {
            format!(
                "binding {} (is another demo running? try --port)",
                config.listen
            )
        })?;
    let public_url = format!("http://{}", listener.local_addr()?);
    let state = control_plane::build_state(
        config.clone(),
        public_url.clone(),
        Arc::new(control_plane::SystemClock),
    )
    .await
    .context("starting the control plane")?;

    // Origin holds the packager's output; every other appliance starts empty and is filled by
    // its fleet agent from the control plane's plan (origin → exchange → embedded).
    for a in &topo.appliances {
        for d in &a.cache_dirs {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            // A title packaged again (changed inputs) must not be served from an earlier run's
            // copy: drop it, so origin gets the new one and fill brings it to the others.
            for id in &repackaged {
                let stale = d.join(id);
                if stale.exists() {
                    std::fs::remove_dir_all(&stale)
                        .with_context(|| format!("removing the stale {}", stale.display()))?;
                }
            }
        }
        if a.kind == topology::Kind::Origin {
            for t in &assets::TITLES {
                assets::copy_title(&dirs.titles.join(t.id), &a.cache_dirs[0], t.id)?;
            }
        }
    }
    let procs: Vec<Arc<Mutex<Proc>>> = topo
        .appliances
        .iter()
        .map(|a| {
            Arc::new(Mutex::new(Proc::new(
                &a.id,
                appliance_args(
                    a,
                    &public_url,
                    bird.as_ref().and_then(|b| b.appliance_flags(&a.id)),
                ),
                dirs.logs.join(format!("{}.log", a.id)),
                [("OUTPOST_APPLIANCE_CREDENTIAL", a.credential.as_str())],
            )))
        })
        .collect();
    for p in &procs {
        p.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.start()?;
    }

    let demo = web::DemoState::new(
        state.clone(),
        topo.clone(),
        procs.clone(),
        api_secret.clone(),
        modules,
        bird.clone(),
    );
    let background = tokio::spawn(control_plane::background(state.clone()));
    let router = control_plane::app(state.clone()).merge(web::router(demo));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        })
        .await
    });

    // Wait (Ctrl-C still stops) until fill has placed every title in the embedded cluster and,
    // with BIRD, the control plane steers from its routes (or the demo fell back to policy
    // prefixes, saying why).
    let bgp = async {
        let Some(b) = &bird else {
            return Ok(());
        };
        match b.wait_until_steering(&state, &topo, BGP_LIMIT).await {
            Ok(()) => {
                eprintln!("demo: bgp: every session is established and the control plane steers from BIRD's routes");
                Ok(())
            }
            Err(why) => {
                eprintln!("demo: warning: BIRD's routes do not steer ({why}); stopping BIRD and steering by policy prefixes instead");
                let admin = config.admin_token.as_ref().map_or("", |t| t.expose());
                let toml = topo.policy_toml(&api_secret, true);
                std::fs::write(&policy, &toml)
                    .with_context(|| format!("writing {}", policy.display()))?;
                put_policy(&state, admin, toml).await?;
                let b = b.clone();
                tokio::task::spawn_blocking(move || b.stop()).await?;
                steering = format!("policy prefixes (BIRD's sessions failed: {why})");
                Ok(())
            }
        }
    };
    let ready = async {
        tokio::try_join!(
            bgp,
            fill::wait_until_placed(&state, &topo, Duration::from_secs(180))
        )
        .map(|_| ())
    };
    let filled = tokio::select! {
        r = ready => Some(r),
        e = first_exit(&procs) => Some(Err(e)),
        () = &mut shutdown => None,
    };
    match &filled {
        Some(Ok(())) => {
            println!();
            println!(
                "Outpost demo is running ({:.1} s to start).",
                started.elapsed().as_secs_f64()
            );
            println!("  open  {public_url}/demo     (player)");
            println!("        {public_url}/fleet    (fleet)");
            println!("  steer {steering}");
            println!("  data  {}", dirs.root.display());
            println!("  logs  {}", dirs.logs.display());
            println!("Press Ctrl-C to stop.");
            shutdown.await;
        }
        Some(Err(e)) => eprintln!("demo: {e:#}"),
        None => {}
    }
    eprintln!("demo: shutting down");
    let _ = stop_tx.send(true);
    let served = server.await;
    background.abort();
    let router = bird.clone();
    tokio::task::spawn_blocking(move || {
        for p in &procs {
            if let Ok(mut p) = p.lock() {
                p.stop(Duration::from_secs(10));
            }
        }
        // The router last, so the appliances close their sessions first.
        if let Some(b) = router {
            b.stop();
        }
    })
    .await?;
    served
        .context("the control plane task")?
        .context("serving the control plane")?;
    if let Some(Err(e)) = filled {
        return Err(e);
    }
    eprintln!("demo: stopped");
    Ok(())
}

/// Starts BIRD unless `--no-bird` or it is not installed, saying at start which steers: BIRD
/// and the line for the ready message, or `None` and why policy prefixes steer.
async fn start_bird(
    args: &Args,
    dirs: &Dirs,
    topo: &Topology,
) -> (Option<Arc<bird::Bird>>, String) {
    let policy = |why: &str| {
        let line = format!(
            "policy prefixes {} on the embedded cluster ({why})",
            topology::LOOPBACK_PREFIXES.join(", ")
        );
        eprintln!("demo: steering: {line}");
        (None, line)
    };
    if args.no_bird {
        return policy("--no-bird");
    }
    let installed = match bird::find() {
        Ok(i) => i,
        Err(why) => return policy(&why),
    };
    let version = installed.version.clone();
    match bird::Bird::start(installed, dirs, topo).await {
        Ok(b) => {
            eprintln!("demo: steering: {}", b.describe(topo));
            let line = b.summary();
            (Some(Arc::new(b)), line)
        }
        Err(e) => {
            eprintln!("demo: warning: BIRD {version} did not start: {e:#}");
            policy(&format!("BIRD {version} did not start"))
        }
    }
}

/// Imports `toml` as the policy through the control plane's admin API (`PUT /v1/admin/policy`),
/// in-process, as an operator's tool would over a socket.
async fn put_policy(
    state: &control_plane::AppState,
    admin_token: &str,
    toml: String,
) -> anyhow::Result<()> {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let req = axum::http::Request::put("/v1/admin/policy")
        .header(axum::http::header::CONTENT_TYPE, "application/toml")
        .header(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {admin_token}"),
        )
        .body(axum::body::Body::from(toml))
        .context("building the policy request")?;
    let resp = match control_plane::app(state.clone()).oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let status = resp.status();
    if !status.is_success() {
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        anyhow::bail!(
            "importing the demo policy with prefixes: {status} {}",
            body.map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Resolves when an appliance exits during start-up (a port in use, a bad cache directory):
/// the demo stops at once and says which and why instead of waiting for fill to time out.
async fn first_exit(procs: &[Arc<Mutex<Proc>>]) -> anyhow::Error {
    loop {
        for p in procs {
            if let Ok(mut p) = p.lock() {
                if let Some(why) = p.exited() {
                    return anyhow::anyhow!("appliance {} exited during start-up ({why})", p.name);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The command line of one appliance: its own ports and cache directories, the fleet agent
/// pointed at the control plane (keys, heartbeats, fill plan; the credential goes through the
/// environment, not the command line), and a fill window that is always open so a newcomer
/// sees titles arrive at once. Origin holds the packager's output and deletes nothing on a plan.
/// With BIRD, `bgp` holds the flags of its BGP speaker peering with BIRD.
fn appliance_args(
    a: &topology::ApplianceSpec,
    control_plane: &str,
    bgp: Option<Vec<String>>,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "appliance".into(),
        "--id".into(),
        a.id.clone(),
        "--listen".into(),
        format!("127.0.0.1:{}", a.port),
        "--admin-listen".into(),
        format!("127.0.0.1:{}", a.admin_port),
        "--cluster".into(),
        a.cluster.to_owned(),
        "--control-plane".into(),
        control_plane.to_owned(),
        "--public-keys".into(),
        a.key_cache.display().to_string(),
        "--fill-window".into(),
        "always".into(),
    ];
    if a.kind == topology::Kind::Origin {
        args.extend(["--fill-removals".into(), "never".into()]);
    }
    for d in &a.cache_dirs {
        args.push("--cache-dir".into());
        args.push(d.display().to_string());
    }
    args.extend(bgp.unwrap_or_default());
    args
}
