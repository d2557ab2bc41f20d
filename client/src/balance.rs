//! Balancing over several endpoints, and over every address of a DNS name
//! re-resolved on a timer (a Kubernetes headless service, say): the resolver
//! task feeds tonic's balanced channel with the addresses that appear and
//! disappear. The task belongs to the client and stops with its last clone.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use crate::error::Error;

/// Pending address changes the channel may hold (the resolver waits when it
/// is full).
const CHANGES: usize = 64;

/// The resolver task; aborted when dropped.
#[derive(Debug)]
pub(crate) struct Resolver(tokio::task::JoinHandle<()>);

impl Drop for Resolver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A channel balanced over the addresses of `endpoints`' hosts, re-resolved
/// `every` so often. `endpoint(url, host)` builds the endpoint of one
/// resolved address (`host` names the server for TLS).
pub(crate) fn resolving<F>(
    endpoints: &[Endpoint],
    every: Duration,
    endpoint: F,
) -> (Channel, Resolver)
where
    F: Fn(&str, &str) -> Result<Endpoint, Error> + Send + Sync + 'static,
{
    let (channel, changes) = Channel::balance_channel::<SocketAddr>(CHANGES);
    let names = names(endpoints);
    let task = tokio::spawn(async move {
        let mut current: HashSet<SocketAddr> = HashSet::new();
        loop {
            let Some((resolved, failed)) = resolve(&names, &current, &endpoint, &changes).await
            else {
                return; // the channel is gone
            };
            // A failed or empty lookup keeps what worked before: DNS having
            // a bad moment must not empty the client's endpoints.
            if !failed && !resolved.is_empty() {
                for gone in current.difference(&resolved) {
                    if changes.send(Change::Remove(*gone)).await.is_err() {
                        return;
                    }
                }
                current = resolved;
            } else {
                current.extend(resolved);
            }
            tokio::time::sleep(every).await;
        }
    });
    (channel, Resolver(task))
}

/// Each endpoint's scheme, host and port (the scheme's default port when
/// the URL has none).
fn names(endpoints: &[Endpoint]) -> Vec<(String, String, u16)> {
    endpoints
        .iter()
        .filter_map(|e| {
            let uri = e.uri();
            let scheme = uri.scheme_str().unwrap_or("http").to_owned();
            let port = uri
                .port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 });
            Some((
                scheme,
                uri.host()?.trim_matches(['[', ']']).to_owned(),
                port,
            ))
        })
        .collect()
}

/// One round of lookups: the addresses found, and whether a lookup failed;
/// new addresses are sent to the channel as found. `None` once the channel
/// is gone.
async fn resolve<F>(
    names: &[(String, String, u16)],
    current: &HashSet<SocketAddr>,
    endpoint: &F,
    changes: &tokio::sync::mpsc::Sender<Change<SocketAddr, Endpoint>>,
) -> Option<(HashSet<SocketAddr>, bool)>
where
    F: Fn(&str, &str) -> Result<Endpoint, Error>,
{
    let mut resolved = HashSet::new();
    let mut failed = false;
    for (scheme, host, port) in names {
        let Ok(addrs) = tokio::net::lookup_host((host.as_str(), *port)).await else {
            failed = true;
            continue;
        };
        for addr in addrs {
            // Known addresses keep their endpoint: building one (TLS roots
            // included) only for new ones.
            if current.contains(&addr) {
                resolved.insert(addr);
                continue;
            }
            let url = format!("{scheme}://{addr}");
            if let Ok(e) = endpoint(&url, host) {
                resolved.insert(addr);
                changes.send(Change::Insert(addr, e)).await.ok()?;
            }
        }
    }
    Some((resolved, failed))
}
