//! Asks Floodgate for one decision and prints it.
//!
//! `cargo run --release -p floodgate-client --example check -- [ENDPOINT] [DOMAIN] [KEY=VALUE...]`
//! Defaults: `http://127.0.0.1:8081 edge user=alice` (the quick start's rules).

use floodgate_client::{Client, Descriptor};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8081".into());
    let domain = args.next().unwrap_or_else(|| "edge".into());
    let mut descriptor = Descriptor::new();
    let mut any = false;
    for pair in args {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("expected KEY=VALUE, got {pair:?}"))?;
        descriptor = descriptor.entry(k, v);
        any = true;
    }
    if !any {
        descriptor = descriptor.entry("user", "alice");
    }
    let client = Client::connect(endpoint).await?;
    let decision = client.should_rate_limit(&domain, [descriptor]).await?;
    let Some(s) = decision.statuses.first() else {
        println!("{:?}: no statuses in the answer", decision.source);
        return Ok(());
    };
    let verdict = if decision.allowed { "OK" } else { "OVER_LIMIT" };
    match (s.limit, s.reset_after) {
        (Some(limit), Some(reset)) => {
            println!(
                "{verdict}: {} of {limit} left, window resets in {:.1}s",
                s.remaining,
                reset.as_secs_f64()
            )
        }
        _ => println!("{verdict}: no limit applies"),
    }
    Ok(())
}
