//! A TCP proxy between a client and a server that a test can cut and restore, to simulate an
//! outage of the server without losing its state (moto keeps everything in memory).
//!
//! [`Proxy::cut`] closes every open connection and the listening socket (new connections are
//! refused: ECONNREFUSED); [`Proxy::restore`] listens again on the same address. Both return
//! once the proxy is in the new state. Uses tokio only, so other test crates can include it
//! with `#[path = "…/support/proxy.rs"] mod proxy;`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// A running proxy; dropping it stops it and closes its connections.
pub struct Proxy {
    /// The address clients connect to.
    pub addr: SocketAddr,
    /// The upstream server.
    pub upstream: SocketAddr,
    want_up: watch::Sender<bool>,
    is_up: watch::Receiver<bool>,
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(128)
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let (want_up, want_rx) = watch::channel(true);
        let (is_up_tx, is_up) = watch::channel(true);
        let open = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run(
            listener,
            addr,
            upstream,
            want_rx,
            is_up_tx,
            open.clone(),
        ));
        Proxy {
            addr,
            upstream,
            want_up,
            is_up,
            open,
            task,
        }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes all connections and stops listening.
    pub async fn cut(&self) {
        self.set(false).await;
        while self.open.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Connections open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Listens again (same address).
    pub async fn restore(&self) {
        self.set(true).await;
    }

    async fn set(&self, up: bool) {
        self.want_up.send_replace(up);
        let mut rx = self.is_up.clone();
        rx.wait_for(|s| *s == up).await.expect("proxy task ended");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.want_up.send_replace(false);
        self.task.abort();
    }
}

async fn run(
    first: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut want: watch::Receiver<bool>,
    is_up: watch::Sender<bool>,
    open: Arc<AtomicUsize>,
) {
    let mut listener = Some(first);
    loop {
        let Some(l) = listener.take() else {
            // Down: wait to be restored, then listen again on the same address.
            if want.wait_for(|up| *up).await.is_err() {
                return;
            }
            match bind(addr) {
                Ok(l) => {
                    listener = Some(l);
                    is_up.send_replace(true);
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((inbound, _)) = accepted {
                    open.fetch_add(1, Ordering::SeqCst);
                    let open = open.clone();
                    let want = want.clone();
                    tokio::spawn(async move {
                        forward(inbound, upstream, want).await;
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                listener = Some(l);
            }
            changed = want.changed() => {
                if changed.is_err() {
                    return;
                }
                if *want.borrow() {
                    listener = Some(l);
                } else {
                    drop(l);
                    is_up.send_replace(false);
                }
            }
        }
    }
}

/// Copies both ways until either side closes or the proxy is cut.
async fn forward(mut inbound: TcpStream, upstream: SocketAddr, mut want: watch::Receiver<bool>) {
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = want.wait_for(|up| !*up) => {}
    }
    // Dropping both streams closes them.
}
