//! Which descriptor values `floodgate bench` sends: one hot key, uniform,
//! Zipf, or well-behaved users plus one abuser. Each caller draws from its
//! own [`Sampler`] (no shared state on the load generator's hot path).

use std::sync::Arc;

/// Which values the calls use.
#[derive(Clone, Debug, PartialEq)]
pub enum Keys {
    /// One value for every call.
    Hot,
    /// A new value for every call: a key flood (fills a store's bound).
    Unique,
    /// Uniform over N values.
    Uniform(u64),
    /// Zipf over N values with exponent S (a few values take most calls).
    Zipf {
        /// How many values.
        n: u64,
        /// The exponent.
        s: f64,
    },
    /// N well-behaved users, plus one abusive user sending `share` of calls.
    Abuse {
        /// Well-behaved users.
        n: u64,
        /// The abusive user's share of calls, 0 to 1.
        share: f64,
    },
}

impl Keys {
    /// Parses `hot`, `unique`, `uniform:N`, `zipf:N:S` or `abuse:N:P`.
    pub fn parse(text: &str) -> Result<Keys, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let n = |i: usize| -> Result<u64, String> {
            parts
                .get(i)
                .and_then(|p| p.parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("--keys {text}: expected a count above 0"))
        };
        let f = |i: usize| -> Result<f64, String> {
            parts
                .get(i)
                .and_then(|p| p.parse().ok())
                .filter(|x: &f64| x.is_finite() && *x > 0.0)
                .ok_or_else(|| format!("--keys {text}: expected a positive number"))
        };
        match parts[0] {
            "hot" if parts.len() == 1 => Ok(Keys::Hot),
            "unique" if parts.len() == 1 => Ok(Keys::Unique),
            "uniform" if parts.len() == 2 => Ok(Keys::Uniform(n(1)?)),
            "zipf" if parts.len() == 3 => Ok(Keys::Zipf { n: n(1)?, s: f(2)? }),
            "abuse" if parts.len() == 3 => {
                let share = f(2)? / 100.0;
                if share > 1.0 {
                    return Err(format!(
                        "--keys {text}: the share is a percentage, at most 100"
                    ));
                }
                Ok(Keys::Abuse { n: n(1)?, share })
            }
            _ => Err(format!(
                "--keys {text}: expected hot, unique, uniform:N, zipf:N:S or abuse:N:P"
            )),
        }
    }
}

/// Draws values by [`Keys`]; one per caller (no shared state on the hot path).
pub(super) struct Sampler {
    keys: Keys,
    /// Zipf: cumulative weights.
    cdf: Arc<[f64]>,
    state: u64,
    /// Unique: this caller's number and how many values it drew.
    caller: u64,
    drawn: u64,
}

impl Sampler {
    pub(super) fn new(keys: &Keys, cdf: Arc<[f64]>, seed: u64) -> Self {
        Sampler {
            keys: keys.clone(),
            cdf,
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            caller: seed,
            drawn: 0,
        }
    }

    /// xorshift64*: fast and good enough to pick keys.
    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(super) fn value(&mut self) -> String {
        match self.keys {
            Keys::Hot => "hot".to_owned(),
            Keys::Unique => {
                self.drawn += 1;
                format!("c{}-{}", self.caller, self.drawn)
            }
            Keys::Uniform(n) => format!("u{}", self.next() % n),
            Keys::Zipf { .. } => {
                let x = self.unit();
                let i = self.cdf.partition_point(|c| *c < x);
                format!("u{i}")
            }
            Keys::Abuse { n, share } => {
                if self.unit() < share {
                    "abuser".to_owned()
                } else {
                    format!("u{}", self.next() % n)
                }
            }
        }
    }
}

/// Zipf's cumulative distribution over `n` values with exponent `s`.
pub(super) fn zipf_cdf(n: u64, s: f64) -> Arc<[f64]> {
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_distributions_parse_and_reject_nonsense() {
        assert_eq!(Keys::parse("hot"), Ok(Keys::Hot));
        assert_eq!(Keys::parse("unique"), Ok(Keys::Unique));
        assert_eq!(Keys::parse("uniform:100"), Ok(Keys::Uniform(100)));
        assert_eq!(
            Keys::parse("zipf:1000:1.1"),
            Ok(Keys::Zipf { n: 1000, s: 1.1 })
        );
        assert_eq!(
            Keys::parse("abuse:50:30"),
            Ok(Keys::Abuse { n: 50, share: 0.3 })
        );
        for bad in [
            "",
            "cold",
            "uniform",
            "uniform:0",
            "zipf:10",
            "abuse:10:150",
            "hot:1",
        ] {
            assert!(Keys::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn samplers_follow_their_distribution() {
        let draw = |keys: Keys, n: usize| {
            let cdf = match keys {
                Keys::Zipf { n, s } => zipf_cdf(n, s),
                _ => Arc::from(Vec::new()),
            };
            let mut s = Sampler::new(&keys, cdf, 7);
            (0..n).map(|_| s.value()).collect::<Vec<_>>()
        };
        assert!(draw(Keys::Hot, 10).iter().all(|v| v == "hot"));
        let unique = draw(Keys::Unique, 1_000);
        let distinct: std::collections::HashSet<_> = unique.iter().collect();
        assert_eq!(distinct.len(), 1_000, "a new value every call");
        // Callers do not share values: the seed is in each.
        let mut other = Sampler::new(&Keys::Unique, Arc::from(Vec::new()), 8);
        assert!(!distinct.contains(&other.value()));
        let abuse = draw(Keys::Abuse { n: 100, share: 0.5 }, 10_000);
        let abusive = abuse.iter().filter(|v| *v == "abuser").count();
        assert!((4_500..5_500).contains(&abusive), "{abusive}");
        let zipf = draw(Keys::Zipf { n: 1000, s: 1.0 }, 10_000);
        let top = zipf.iter().filter(|v| *v == "u0").count();
        // The top value of Zipf(1000, 1) takes 1/H(1000) = 13.4% of draws.
        assert!((1_100..1_600).contains(&top), "{top}");
        let uniform = draw(Keys::Uniform(10), 10_000);
        let zero = uniform.iter().filter(|v| *v == "u0").count();
        assert!((800..1_200).contains(&zero), "{zero}");
    }
}
