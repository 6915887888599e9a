//! `api serve` (default): the REST API, WebSocket and dashboard. `api create-admin`: the first
//! administrator. `api init-secrets`: generates the deployment's JWT key and first admin
//! password into files (0600) that `serve` reads, unless they exist.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use api::rate_limit::RateSpec;
use api::{ApiConfig, AppState};
use clap::{Args, Parser, Subcommand};

/// The dev-only signing key, used with --insecure-dev when JWT_SECRET is not set.
const DEV_SECRET: &str = "vncguard-insecure-development-secret";

#[derive(Parser)]
#[command(
    name = "api",
    version,
    about = "vncguard API: REST, WebSocket live events, dashboard"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Create an admin user (the password is read from an environment variable).
    CreateAdmin {
        #[arg(long)]
        username: String,
        /// Name of the environment variable that holds the password.
        #[arg(long)]
        password_env: String,
    },
    /// Write a random JWT key (`jwt-secret`) and first admin password (`admin-password`) into
    /// DIR, readable by their owner only, unless they exist; point JWT_SECRET_FILE and
    /// VNCGUARD_ADMIN_PASSWORD_FILE at them.
    InitSecrets {
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// Make a decision signing key: the private key file (0600) and its public key line
    /// (key_id:BASE64, printed, and written to KEY_FILE.pub) for the agents' DECISION_PUBLIC_KEYS.
    Keygen(trust::KeygenArgs),
}

#[derive(Args)]
struct ServeArgs {
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    host: String,
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/vncguard"
    )]
    database_url: String,
    /// Connections in the Postgres pool.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16)]
    database_pool_size: usize,
    /// HS256 key for access tokens; required unless --insecure-dev.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// File holding the HS256 key (instead of JWT_SECRET).
    #[arg(long, env = "JWT_SECRET_FILE")]
    jwt_secret_file: Option<std::path::PathBuf>,
    /// Allow a built-in JWT secret (development only; printed as a warning).
    #[arg(long, env = "INSECURE_DEV")]
    insecure_dev: bool,
    /// Access token lifetime in seconds.
    #[arg(long, env = "JWT_ACCESS_TTL_SECS", default_value_t = 900)]
    jwt_access_ttl_secs: u64,
    /// Refresh token lifetime in seconds.
    #[arg(long, env = "JWT_REFRESH_TTL_SECS", default_value_t = 7 * 86_400)]
    jwt_refresh_ttl_secs: u64,
    /// Lifetime of a login in seconds, however often it is refreshed.
    #[arg(long, env = "JWT_REFRESH_ABSOLUTE_TTL_SECS", default_value_t = api::REFRESH_ABSOLUTE_TTL_SECS)]
    jwt_refresh_absolute_ttl_secs: u64,
    /// Open WebSockets allowed per client address (IPv6: per /64).
    #[arg(long, env = "WS_CONNECTIONS_PER_ADDRESS", default_value_t = api::WS_CONNECTIONS_PER_ADDRESS)]
    ws_connections_per_address: usize,
    /// CORS origins, comma-separated.
    #[arg(
        long,
        env = "ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    allowed_origins: Vec<String>,
    /// Limit per client address on /api/auth/*: MAX/SECONDS or off.
    #[arg(long, env = "AUTH_RATE_LIMIT", default_value = "100/900")]
    auth_rate_limit: RateSpec,
    /// Limit per client address on the rest of /api and /ws: MAX/SECONDS or off.
    #[arg(long, env = "API_RATE_LIMIT", default_value = "3000/60")]
    api_rate_limit: RateSpec,
    /// Reverse proxies (addresses or CIDR networks, comma-separated) whose X-Forwarded-For
    /// names the client for rate limits and the audit log; the header is ignored from others.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<TrustedProxy>,
    /// Capture agents' heartbeat interval in seconds (three missed make an agent stale).
    #[arg(long, env = "AGENT_HEARTBEAT_INTERVAL_SECS", default_value_t = 30)]
    agent_heartbeat_interval_secs: u64,
    /// Events queued per WebSocket client before it is dropped.
    #[arg(long, env = "WS_CLIENT_QUEUE", default_value_t = 1024)]
    ws_client_queue: usize,
    /// Apply the database migrations at start.
    #[arg(long, env = "API_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    migrate: bool,
    /// First admin, created at start when no admin exists (with VNCGUARD_ADMIN_PASSWORD).
    #[arg(long, env = "VNCGUARD_ADMIN_USER")]
    admin_user: Option<String>,
    #[arg(long, env = "VNCGUARD_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// File holding the first admin's password (instead of VNCGUARD_ADMIN_PASSWORD).
    #[arg(long, env = "VNCGUARD_ADMIN_PASSWORD_FILE")]
    admin_password_file: Option<std::path::PathBuf>,
    /// The Ed25519 key analysts' decisions are signed with (`api keygen` makes one); without it
    /// block, unblock and quarantine answer 503.
    #[arg(long, env = "DECISION_SIGNING_KEY_FILE", value_name = "FILE")]
    decision_signing_key_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    guardrails: trust::GuardrailArgs,
    #[command(flatten)]
    bus: bus::BusArgs,
    #[command(flatten)]
    log: telemetry::LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.serve.log.init();
    // Secrets are made before anything connects anywhere: the compose deployment runs this
    // before Postgres or the broker are up.
    let command = match cli.command {
        Some(Command::InitSecrets { dir }) => return init_secrets(&dir),
        Some(Command::Keygen(keygen)) => {
            println!("{}", keygen.run()?);
            return Ok(());
        }
        Some(Command::CreateAdmin {
            username,
            password_env,
        }) => Some((username, password_env)),
        None | Some(Command::Serve) => None,
    };
    let args = cli.serve;
    let pool = sink::connect_pool(
        &args.database_url,
        args.database_pool_size,
        Duration::from_secs(5),
    )
    .context("database pool")?;
    if args.migrate {
        let mut client = pool.get().await.context("connecting to the database")?;
        sink::migrate::migrate(&mut client)
            .await
            .context("applying migrations")?;
    }
    match command {
        Some((username, password_env)) => {
            let password = std::env::var(&password_env)
                .with_context(|| format!("{password_env} is not set"))?;
            api::auth::check_password_policy("password", &password)
                .map_err(|e| anyhow::anyhow!(e.message))?;
            let client = pool.get().await?;
            match api::routes::users::insert_user(
                &client,
                &username,
                &password,
                api::auth::Role::Admin,
            )
            .await
            {
                Ok(Some(user)) => println!("created admin {} (id {})", user.username, user.id),
                Ok(None) => bail!("user {username} exists already"),
                Err(e) => bail!("cannot create the admin: {}", e.message),
            }
            Ok(())
        }
        None => serve(args, pool).await,
    }
}

async fn serve(args: ServeArgs, pool: deadpool_postgres::Pool) -> anyhow::Result<()> {
    let jwt_secret = api::secrets::read_secret(args.jwt_secret, args.jwt_secret_file.as_deref())
        .context("reading JWT_SECRET_FILE")?;
    let secret = match (jwt_secret, args.insecure_dev) {
        (Some(secret), _) => {
            api::secrets::check_jwt_secret(&secret)?;
            secret
        }
        (None, true) => {
            tracing::warn!("JWT_SECRET is not set: using the built-in development secret (--insecure-dev); never do this in production");
            DEV_SECRET.to_string()
        }
        (None, false) => {
            bail!("JWT_SECRET (or JWT_SECRET_FILE) is required (or --insecure-dev for development)")
        }
    };
    let admin_password = api::secrets::read_secret(
        args.admin_password.clone(),
        args.admin_password_file.as_deref(),
    )
    .context("reading VNCGUARD_ADMIN_PASSWORD_FILE")?;
    if let (Some(user), Some(password)) = (&args.admin_user, &admin_password) {
        let client = pool.get().await?;
        let admins: i64 = client
            .query_one("SELECT count(*) FROM users WHERE role = 'admin'", &[])
            .await?
            .get(0);
        if admins == 0 {
            api::auth::check_password_policy("password", password)
                .map_err(|e| anyhow::anyhow!(e.message))?;
            api::secrets::check_secret("VNCGUARD_ADMIN_PASSWORD", password, 10)?;
            api::routes::users::insert_user(&client, user, password, api::auth::Role::Admin)
                .await
                .map_err(|e| anyhow::anyhow!(e.message))?;
            tracing::info!(user = %user, "created the first admin");
        }
    }
    let mut config = ApiConfig::new(secret);
    config.access_ttl = Duration::from_secs(args.jwt_access_ttl_secs);
    config.refresh_ttl = Duration::from_secs(args.jwt_refresh_ttl_secs);
    config.refresh_absolute_ttl = Duration::from_secs(args.jwt_refresh_absolute_ttl_secs);
    config.ws_connections_per_address = args.ws_connections_per_address.max(1);
    config.guardrails = args.guardrails.guardrails();
    match &args.decision_signing_key_file {
        Some(path) => {
            let signer = trust::DecisionSigner::from_file(path)
                .with_context(|| format!("reading the decision signing key {}", path.display()))?;
            tracing::info!(key_id = signer.key_id(), "signing analysts' decisions");
            config.decision_signer = Some(signer);
        }
        None => tracing::warn!(
            "no DECISION_SIGNING_KEY_FILE: block, unblock and quarantine answer 503 (`api keygen` makes a key)"
        ),
    }
    config.allowed_origins = args
        .allowed_origins
        .into_iter()
        .filter(|o| !o.is_empty())
        .collect();
    config.auth_rate = args.auth_rate_limit;
    config.api_rate = args.api_rate_limit;
    config.agent_heartbeat_interval =
        Duration::from_secs(args.agent_heartbeat_interval_secs.max(1));
    config.ws_queue = args.ws_client_queue;
    config.trusted_proxies = args.trusted_proxies.into_iter().map(|p| p.0).collect();
    let bus = bus::kafka::KafkaBus::new(&args.bus).context("bus")?;
    let state = AppState::new(config, pool, &bus).context("bus producer")?;
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .context("HOST/PORT")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "api listening");
    api::serve(state, bus, listener, async {
        bus::pipeline::shutdown_signal().await;
    })
    .await
    .context("serving")
}

/// A proxy of `TRUSTED_PROXIES`: a network, or one address.
#[derive(Debug, Clone)]
struct TrustedProxy(ipnet::IpNet);

impl std::str::FromStr for TrustedProxy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        text.parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(TrustedProxy)
            .map_err(|_| format!("{text:?} is neither an address nor a CIDR network"))
    }
}

/// `api init-secrets --dir DIR`: the deployment's secrets, generated once.
fn init_secrets(dir: &std::path::Path) -> anyhow::Result<()> {
    for (name, bytes) in [("jwt-secret", 32), ("admin-password", 12)] {
        let path = dir.join(name);
        let existed = path.exists();
        api::secrets::local_secret(&path, bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        // Names only: the values stay in the files.
        println!(
            "{} {}",
            if existed { "kept" } else { "generated" },
            path.display()
        );
    }
    Ok(())
}
