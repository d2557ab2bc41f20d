//! envoyproxy/ratelimit's environment, read when Floodgate stands in for it
//! (`floodgate serve --compat envoy-ratelimit`): each of its variables that
//! Floodgate honours becomes the `FLOODGATE_*` variable of the setting it
//! means, under the variables already set (an explicit `FLOODGATE_*`
//! variable wins). Each one that has no effect is reported by name, so none
//! is silently ignored.
//!
//! Covered so far: the gRPC server's TLS (`GRPC_SERVER_USE_TLS` and its
//! files, as envoyproxy/ratelimit and Envoy Gateway set them).

use std::collections::HashMap;

/// Which service's environment to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compat {
    /// envoyproxy/ratelimit's (`GRPC_SERVER_USE_TLS`, ...).
    EnvoyRatelimit,
}

/// What the compatibility layer made of the environment.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Translated {
    /// `FLOODGATE_*` variables to add (none of them already set).
    pub variables: Vec<(String, String)>,
    /// One line per variable that has no effect, and why (to log).
    pub ignored: Vec<String>,
}

/// Go's `strconv.ParseBool`, which envoyproxy/ratelimit's settings use.
fn go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// envoyproxy/ratelimit's variables in `env`, as Floodgate's.
pub fn envoy_ratelimit(env: &HashMap<String, String>) -> Translated {
    let mut out = Translated::default();
    let tls_files = [
        ("GRPC_SERVER_TLS_CERT", "GRPC_TLS_CERT_FILE"),
        ("GRPC_SERVER_TLS_KEY", "GRPC_TLS_KEY_FILE"),
        // envoyproxy/ratelimit reads the client CA from GRPC_CLIENT_TLS_CACERT;
        // Envoy Gateway sets GRPC_SERVER_TLS_CA_CERT. Either asks for
        // client certificates (required, as envoyproxy/ratelimit does).
        ("GRPC_CLIENT_TLS_CACERT", "GRPC_TLS_CLIENT_CA_FILE"),
        ("GRPC_SERVER_TLS_CA_CERT", "GRPC_TLS_CLIENT_CA_FILE"),
        ("GRPC_CLIENT_TLS_SAN", "GRPC_TLS_CLIENT_NAMES"),
    ];
    let use_tls = env.get("GRPC_SERVER_USE_TLS").map(|v| (v, go_bool(v)));
    match use_tls {
        Some((_, Some(true))) => {
            for (theirs, ours) in tls_files {
                let ours = format!("{}_{ours}", super::ENV_PREFIX);
                match env.get(theirs) {
                    Some(value) if env.contains_key(&ours) => out
                        .ignored
                        .push(format!("{theirs}={value:?}: {ours} is set and wins")),
                    Some(value) if !out.variables.iter().any(|(k, _)| *k == ours) => {
                        out.variables.push((ours, value.clone()));
                    }
                    Some(value) => out.ignored.push(format!(
                        "{theirs}={value:?}: {ours} already comes from another variable"
                    )),
                    None => {}
                }
            }
        }
        Some((value, parsed)) => {
            if parsed.is_none() {
                out.ignored.push(format!(
                    "GRPC_SERVER_USE_TLS={value:?}: not a boolean, so TLS is off"
                ));
            }
            for (theirs, _) in tls_files {
                if let Some(value) = env.get(theirs) {
                    out.ignored.push(format!(
                        "{theirs}={value:?}: GRPC_SERVER_USE_TLS is not true"
                    ));
                }
            }
        }
        None => {
            for (theirs, _) in tls_files {
                if let Some(value) = env.get(theirs) {
                    out.ignored.push(format!(
                        "{theirs}={value:?}: GRPC_SERVER_USE_TLS is not set"
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn envoy_gateways_tls_variables_become_the_grpc_listeners_tls() {
        let t = envoy_ratelimit(&env(&[
            ("GRPC_SERVER_USE_TLS", "true"),
            ("GRPC_SERVER_TLS_CERT", "/certs/tls.crt"),
            ("GRPC_SERVER_TLS_KEY", "/certs/tls.key"),
            ("GRPC_SERVER_TLS_CA_CERT", "/certs/ca.crt"),
        ]));
        assert_eq!(
            t.variables,
            [
                ("FLOODGATE_GRPC_TLS_CERT_FILE", "/certs/tls.crt"),
                ("FLOODGATE_GRPC_TLS_KEY_FILE", "/certs/tls.key"),
                ("FLOODGATE_GRPC_TLS_CLIENT_CA_FILE", "/certs/ca.crt"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert!(t.ignored.is_empty(), "{:?}", t.ignored);
    }

    #[test]
    fn tls_files_without_use_tls_are_reported_not_used() {
        let t = envoy_ratelimit(&env(&[
            ("GRPC_SERVER_USE_TLS", "false"),
            ("GRPC_SERVER_TLS_CERT", "/certs/tls.crt"),
        ]));
        assert!(t.variables.is_empty());
        assert_eq!(
            t.ignored,
            ["GRPC_SERVER_TLS_CERT=\"/certs/tls.crt\": GRPC_SERVER_USE_TLS is not true"]
        );
    }

    #[test]
    fn an_explicit_floodgate_variable_wins() {
        let t = envoy_ratelimit(&env(&[
            ("GRPC_SERVER_USE_TLS", "1"),
            ("GRPC_SERVER_TLS_CERT", "/a"),
            ("GRPC_CLIENT_TLS_SAN", "spiffe://x"),
            ("FLOODGATE_GRPC_TLS_CERT_FILE", "/b"),
        ]));
        assert_eq!(
            t.variables,
            [(
                "FLOODGATE_GRPC_TLS_CLIENT_NAMES".to_owned(),
                "spiffe://x".to_owned()
            )]
        );
        assert_eq!(
            t.ignored,
            ["GRPC_SERVER_TLS_CERT=\"/a\": FLOODGATE_GRPC_TLS_CERT_FILE is set and wins"]
        );
    }
}
