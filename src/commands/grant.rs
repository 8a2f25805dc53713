//! `outpost grant`: mint and check stream grants by hand (the control plane mints them in
//! production; this is for operators and tests).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use protocol::grant::{sign, Claims, ClientPrefix, Request, Verifier, DEFAULT_MAX_LIFETIME_SECS};
use rand::RngCore as _;

use super::keys::{load_key_ring, load_signing_key};

/// Flags for `outpost grant`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: GrantCommand,
}

#[derive(Debug, clap::Subcommand)]
enum GrantCommand {
    /// Sign a grant and print it.
    Sign(SignArgs),
    /// Verify a request path carrying a grant; exit 0 only when it is accepted.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
struct SignArgs {
    /// Private key file, `<kid>.key.pem`.
    #[arg(long)]
    key: PathBuf,
    /// Cluster ids where the grant is valid (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    aud: Vec<String>,
    /// Path prefix covered, e.g. `/tears-of-steel/`.
    #[arg(long)]
    prefix: String,
    /// Lifetime in seconds from now.
    #[arg(long)]
    ttl: u64,
    /// Rendition ids allowed (comma-separated); all when absent.
    #[arg(long, value_delimiter = ',')]
    renditions: Option<Vec<String>>,
    /// Client network: a CIDR prefix, or an address (bound to its /24 or /56).
    #[arg(long)]
    client_prefix: Option<String>,
    /// Playback session id; a random one when absent.
    #[arg(long)]
    sub: Option<String>,
    /// Issuer.
    #[arg(long, default_value = "outpost")]
    iss: String,
    /// Refuse TTLs above this many seconds (the same policy cap appliances apply).
    #[arg(long, default_value_t = DEFAULT_MAX_LIFETIME_SECS)]
    max_ttl: u64,
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// Directory of `<kid>.pub.pem` public keys.
    #[arg(long)]
    public_keys: PathBuf,
    /// Request path: `/g/<grant>/<title>/<file>`.
    #[arg(long)]
    path: String,
    /// This appliance's cluster id.
    #[arg(long)]
    aud: String,
    /// The client's address.
    #[arg(long)]
    client_ip: Option<IpAddr>,
    /// Longest accepted lifetime (`exp - iat`), seconds.
    #[arg(long, default_value_t = DEFAULT_MAX_LIFETIME_SECS)]
    max_lifetime: u64,
    /// Verify as of this Unix time instead of the system clock.
    #[arg(long)]
    now: Option<u64>,
}

/// Runs `outpost grant`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        GrantCommand::Sign(a) => sign_cmd(a),
        GrantCommand::Verify(a) => verify_cmd(a),
    }
}

fn random_id() -> String {
    let mut b = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut b);
    protocol::hex::encode(&b)
}

fn sign_cmd(a: SignArgs) -> anyhow::Result<ExitCode> {
    if a.ttl == 0 || a.ttl > a.max_ttl {
        anyhow::bail!("--ttl {}: must be 1..={} seconds", a.ttl, a.max_ttl);
    }
    let key = load_signing_key(&a.key)?;
    let client = match a.client_prefix.as_deref() {
        None => None,
        Some(s) if s.contains('/') => Some(s.parse::<ClientPrefix>().context("--client-prefix")?),
        Some(s) => {
            let ip: IpAddr = s
                .parse()
                .with_context(|| format!("--client-prefix {s:?}: not a CIDR or an IP address"))?;
            Some(ClientPrefix::binding_for(ip))
        }
    };
    let now = super::unix_now();
    let claims = Claims {
        iss: a.iss,
        aud: a.aud,
        sub: a.sub.unwrap_or_else(random_id),
        nbf: None,
        iat: now,
        exp: now + a.ttl,
        prefix: a.prefix,
        renditions: a.renditions,
        client,
        jti: random_id(),
        scope: Default::default(),
    };
    let token = sign(&key, &claims).context("signing grant")?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

fn verify_cmd(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let ring = load_key_ring(&a.public_keys)?;
    let verifier = Verifier::new(ring, a.aud).with_max_lifetime(a.max_lifetime);
    let req = Request {
        path: a.path.split('?').next().unwrap_or_default(),
        client_ip: a.client_ip,
        now: a.now.unwrap_or_else(super::unix_now),
    };
    match verifier.verify(&req) {
        Ok(v) => {
            let out = serde_json::json!({
                "valid": true,
                "kid": v.kid,
                "resource": v.resource.as_str(),
                "rendition": v.resource.rendition(),
                "claims": v.claims,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({"valid": false, "reason": e.code(), "detail": e.to_string()})
            );
            eprintln!("refused: {}: {e}", e.code());
            Ok(ExitCode::FAILURE)
        }
    }
}
