//! `proxy`: a TCP relay between clients and the broker that can cut every connection at once.
//!
//! SIGUSR1 cuts: every open connection is closed (both sides) and, for the outage, new
//! connections are accepted and closed at once, as if the broker were unreachable. The broker
//! must advertise the proxy's address, or clients would reconnect to it directly.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::args::Args;

pub(crate) async fn run(a: &Args) -> Result<(), String> {
    let listen = Args::required(&a.listen, "--listen")?;
    let upstream = Args::required(&a.upstream, "--upstream")?.to_owned();
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("bind {listen}: {e}"))?;
    let outage = Duration::from_millis(a.outage_ms);
    let mut cut_signal = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    // Bumped on every cut; each relay ends when it changes.
    let (cuts, _) = watch::channel(0u64);
    let mut refuse_until = Instant::now();
    eprintln!("proxy {listen} -> {upstream}");
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = cut_signal.recv() => {
                cuts.send_modify(|n| *n += 1);
                refuse_until = Instant::now() + outage;
                eprintln!("proxy: cut every connection; refusing for {outage:?}");
            }
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                if Instant::now() < refuse_until {
                    drop(client);
                    continue;
                }
                tokio::spawn(relay(client, upstream.clone(), cuts.subscribe()));
            }
        }
    }
}

/// Copies both ways until either side closes or a cut comes.
async fn relay(mut client: TcpStream, upstream: String, mut cut: watch::Receiver<u64>) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.changed() => {}
    }
}
