//! Connecting to the daemon: address normalisation, optional TLS, and the bearer token
//! attached to every call by an interceptor (so no command can forget it).
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use super::args::Cli;
use super::error::{CliError, CliResult};
use ctp_api::pb::continual_trainer_client::ContinualTrainerClient;

/// Large responses (version lists with many evals, embeddings of many images) exceed
/// tonic's 4 MiB default; the daemon's own limit is what really bounds them.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Adds `authorization: Bearer <token>` when a token was given.
#[derive(Clone)]
pub struct BearerAuth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

impl BearerAuth {
    /// Validates the token up front: a token with a newline would otherwise fail every call
    /// with an obscure metadata error.
    pub fn new(token: Option<&str>) -> CliResult<BearerAuth> {
        match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(BearerAuth(None)),
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|v| BearerAuth(Some(v)))
                .map_err(|_| {
                    CliError::local("--token contains characters not allowed in a header")
                }),
        }
    }
}

/// The service client every command uses.
pub type Client = ContinualTrainerClient<InterceptedService<Channel, BearerAuth>>;

/// `127.0.0.1:50051` → `http://127.0.0.1:50051`: users type addresses without a scheme.
pub fn normalize_addr(addr: &str) -> String {
    let addr = addr.trim();
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// An open channel plus the auth interceptor, shared by the service and health clients.
#[derive(Clone)]
pub struct Connection {
    /// The (reconnecting) HTTP/2 channel.
    pub channel: Channel,
    /// The token interceptor.
    pub auth: BearerAuth,
    /// The address, for messages.
    pub addr: String,
}

impl Connection {
    /// Connects eagerly, so "daemon not running" is reported once, clearly, with exit 3.
    pub async fn open(cli: &Cli) -> CliResult<Connection> {
        let addr = normalize_addr(&cli.addr);
        let auth = BearerAuth::new(cli.token.as_deref())?;
        let mut endpoint = Endpoint::from_shared(addr.clone())
            .map_err(|e| CliError::local(format!("invalid --addr {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        if addr.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_enabled_roots();
            if let Some(path) = &cli.ca_cert {
                let pem = std::fs::read(path)
                    .map_err(|e| CliError::local(format!("--ca-cert {}: {e}", path.display())))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&cli.client_cert, &cli.client_key) {
                let read = |flag: &str, p: &std::path::Path| {
                    std::fs::read(p)
                        .map_err(|e| CliError::local(format!("{flag} {}: {e}", p.display())))
                };
                tls = tls.identity(Identity::from_pem(
                    read("--client-cert", cert)?,
                    read("--client-key", key)?,
                ));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| CliError::local(format!("TLS setup for {addr}: {e}")))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            CliError::Connect(format!("cannot connect to {addr}: {}", error_chain(&e)))
        })?;
        Ok(Connection {
            channel,
            auth,
            addr,
        })
    }

    /// The ContinualTrainer client.
    pub fn client(&self) -> Client {
        ContinualTrainerClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// `e: cause: cause` — tonic's transport errors hide the useful part ("connection
/// refused") in their sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_tokens() {
        assert_eq!(normalize_addr("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(normalize_addr(" https://h:1 "), "https://h:1");
        let mut auth = BearerAuth::new(Some("s3cret")).unwrap();
        let req = tonic::service::Interceptor::call(&mut auth, Request::new(())).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );
        let mut none = BearerAuth::new(Some("  ")).unwrap();
        let req = tonic::service::Interceptor::call(&mut none, Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
        assert!(BearerAuth::new(Some("a\nb")).is_err());
    }
}
