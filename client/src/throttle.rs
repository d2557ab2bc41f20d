//! Client-side adaptive throttling, after Google's SRE book ("Handling
//! Overload"): a client that sees its backend reject requests starts
//! rejecting some of its own requests before sending them, in proportion to
//! how many the backend has been rejecting, and stops on its own once the
//! rejections stop.
//!
//! Over a sliding window (default 2 minutes) the throttle counts `requests`
//! (every attempt, including the ones it dropped itself) and `accepts` (the
//! ones the backend accepted). Once `requests` reaches a minimum, a new
//! request is dropped locally with probability
//! `max(0, (requests − K × accepts) / (requests + 1))`: with `K = 2` the
//! client keeps sending about twice what the backend accepts, enough to
//! notice as soon as the backend accepts more again.
//!
//! [`AdaptiveThrottle`] is lock-free (one atomic read-modify-write per count)
//! and knows nothing of Floodgate: wrap any backend call in
//! [`AdaptiveThrottle::admit`] and [`AdaptiveThrottle::accepted`], or, to
//! count only calls that finished (a cancelled call then counts for
//! nothing), [`AdaptiveThrottle::would_drop`] and
//! [`AdaptiveThrottle::record`]. The [`crate::Client`] keeps one per limited
//! key (OVER_LIMIT answers are its rejections) and one for the service
//! itself (errors are its rejections); a retry is not a new request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How an [`AdaptiveThrottle`] counts and decides.
#[derive(Clone, Debug, PartialEq)]
pub struct ThrottleSettings {
    /// How far back requests and accepts are counted (default 2 minutes).
    pub window: Duration,
    /// The window is counted in this many slices: older slices drop out as a
    /// whole, so the window slides in steps of `window / buckets`
    /// (default 12: 10 s steps for 2 minutes).
    pub buckets: usize,
    /// `K`: how many requests per accepted one the client keeps sending
    /// (default 2; lower throttles harder).
    pub k: f64,
    /// No throttling until the window holds this many requests (default 20):
    /// one rejection out of two requests means nothing yet.
    pub min_requests: u64,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            window: Duration::from_secs(120),
            buckets: 12,
            k: 2.0,
            min_requests: 20,
        }
    }
}

/// One slice of the window: a counter tagged with the slice's epoch.
///
/// The high 32 bits hold `epoch + 1` (0: never used), the low 32 bits the
/// count, so that resetting a slice for a new epoch and counting in it is one
/// compare-and-swap, with no lock.
#[derive(Debug, Default)]
struct Slice {
    requests: AtomicU64,
    accepts: AtomicU64,
}

const COUNT_MASK: u64 = u32::MAX as u64;
const MIN_SLICE_MS: u64 = 100;

fn bump(counter: &AtomicU64, tag: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(if v >> 32 == tag {
            // Saturates at u32::MAX per slice rather than spilling into the tag.
            (tag << 32) | ((v & COUNT_MASK) + 1).min(COUNT_MASK)
        } else {
            (tag << 32) | 1
        })
    });
}

/// A lock-free adaptive throttle for calls to one backend. See the module
/// documentation for the rule it follows.
///
/// ```
/// use floodgate_client::{AdaptiveThrottle, ThrottleSettings};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let throttle = AdaptiveThrottle::new(ThrottleSettings::default());
/// if throttle.admit() {
///     let backend_accepted = true; // call the backend here
///     if backend_accepted {
///         throttle.accepted();
///     }
/// } else {
///     // dropped locally: answer as the backend would have rejected it
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct AdaptiveThrottle {
    settings: ThrottleSettings,
    start: Instant,
    slice_ms: u64,
    slices: Box<[Slice]>,
}

impl AdaptiveThrottle {
    /// A throttle with nothing counted yet. Reads tokio's clock, so it must
    /// be created and used inside a tokio runtime.
    pub fn new(settings: ThrottleSettings) -> Self {
        let buckets = settings.buckets.max(1);
        // At least 100 ms a slice: the 32-bit slice tag then lasts 13 years.
        let slice_ms = (settings.window.as_millis() as u64 / buckets as u64).max(MIN_SLICE_MS);
        AdaptiveThrottle {
            settings,
            start: Instant::now(),
            slice_ms,
            slices: (0..buckets).map(|_| Slice::default()).collect(),
        }
    }

    /// The tag of the current slice (its epoch + 1).
    fn tag(&self) -> u64 {
        (self.start.elapsed().as_millis() as u64 / self.slice_ms) + 1
    }

    fn slice(&self, tag: u64) -> &Slice {
        &self.slices[(tag % self.slices.len() as u64) as usize]
    }

    /// Requests and accepts counted in the window ending now.
    pub fn counts(&self) -> (u64, u64) {
        let now = self.tag();
        let oldest = now.saturating_sub(self.slices.len() as u64 - 1);
        let in_window = |v: u64| {
            let tag = v >> 32;
            if tag >= oldest && tag <= now {
                v & COUNT_MASK
            } else {
                0
            }
        };
        self.slices.iter().fold((0, 0), |(r, a), s| {
            (
                r + in_window(s.requests.load(Ordering::Relaxed)),
                a + in_window(s.accepts.load(Ordering::Relaxed)),
            )
        })
    }

    /// The probability that [`AdaptiveThrottle::admit`] drops the next
    /// request: `max(0, (requests − K × accepts) / (requests + 1))`, or 0
    /// while the window holds fewer than `min_requests` requests.
    pub fn rejection_probability(&self) -> f64 {
        let (requests, accepts) = self.counts();
        if requests < self.settings.min_requests {
            return 0.0;
        }
        let requests = requests as f64;
        ((requests - self.settings.k * accepts as f64) / (requests + 1.0)).max(0.0)
    }

    /// Counts a request and decides whether to send it: `false` means drop
    /// it locally (treat it as rejected by the backend).
    pub fn admit(&self) -> bool {
        self.admit_with(fastrand::f64())
    }

    /// [`AdaptiveThrottle::admit`] with the random draw given (in `[0, 1)`).
    pub(crate) fn admit_with(&self, draw: f64) -> bool {
        let p = self.rejection_probability();
        let tag = self.tag();
        bump(&self.slice(tag).requests, tag);
        draw >= p
    }

    /// Counts a request the backend accepted (call it once per admitted
    /// request that succeeded).
    pub fn accepted(&self) {
        let tag = self.tag();
        bump(&self.slice(tag).accepts, tag);
    }

    /// Decides whether to drop the next request, without counting it: count
    /// it with [`AdaptiveThrottle::record`] once its outcome is known (also
    /// when it was dropped: `record(false)`).
    pub fn would_drop(&self) -> bool {
        fastrand::f64() < self.rejection_probability()
    }

    /// Counts one finished request, accepted by the backend or not.
    pub fn record(&self, accepted: bool) {
        let tag = self.tag();
        let slice = self.slice(tag);
        bump(&slice.requests, tag);
        if accepted {
            bump(&slice.accepts, tag);
        }
    }
}

type Throttles = HashMap<String, Arc<AdaptiveThrottle>>;

/// One throttle per key (the client's limited descriptors), bounded: a key
/// idle for a whole window is forgotten when room is needed (looked for at
/// most once a slice, so a flood of new keys costs no scan per call), and
/// past the bound new keys go unthrottled rather than growing the map.
#[derive(Debug)]
pub(crate) struct KeyedThrottles {
    settings: ThrottleSettings,
    max_keys: usize,
    /// The throttles, and when idle ones were last swept.
    map: Mutex<(Throttles, Option<Instant>)>,
}

impl KeyedThrottles {
    pub(crate) fn new(settings: ThrottleSettings, max_keys: usize) -> Self {
        KeyedThrottles {
            settings,
            max_keys,
            map: Mutex::new((HashMap::new(), None)),
        }
    }

    /// The throttle of `key`, created if there is room.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<AdaptiveThrottle>> {
        // Every update under this lock is a single insert or removal, so a
        // poisoned map is still consistent.
        let mut guard = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (map, last_sweep) = &mut *guard;
        if let Some(t) = map.get(key) {
            return Some(t.clone());
        }
        if map.len() >= self.max_keys {
            let now = Instant::now();
            let slice = self.settings.window / self.settings.buckets.max(1) as u32;
            if last_sweep.is_some_and(|at| now.duration_since(at) < slice) {
                return None;
            }
            *last_sweep = Some(now);
            map.retain(|_, t| t.counts().0 > 0);
            if map.len() >= self.max_keys {
                return None;
            }
        }
        let throttle = Arc::new(AdaptiveThrottle::new(self.settings.clone()));
        map.insert(key.to_owned(), throttle.clone());
        Some(throttle)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().map(|m| m.0.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::float_cmp)]

    use super::*;

    fn settings() -> ThrottleSettings {
        ThrottleSettings::default()
    }

    /// `requests` requests of which the first `accepts` were accepted.
    fn feed(t: &AdaptiveThrottle, requests: u64, accepts: u64) {
        for i in 0..requests {
            // Draw 0.999...: admitted unless the probability is ~1; either
            // way the request is counted.
            t.admit_with(0.999_999);
            if i < accepts {
                t.accepted();
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_throttling_below_the_minimum_sample() {
        let t = AdaptiveThrottle::new(settings());
        feed(&t, 19, 0);
        assert_eq!(t.counts(), (19, 0));
        assert_eq!(t.rejection_probability(), 0.0);
        // Even the lowest draw is admitted: nothing is dropped yet.
        assert!(t.admit_with(0.0));
        // That was the 20th request: now 20 rejected of 20 is significant.
        assert_eq!(t.rejection_probability(), 20.0 / 21.0);
    }

    #[tokio::test(start_paused = true)]
    async fn drop_probability_follows_the_formula() {
        let t = AdaptiveThrottle::new(settings());
        feed(&t, 100, 30);
        let p = (100.0 - 2.0 * 30.0) / 101.0;
        assert_eq!(t.rejection_probability(), p);
        // A draw below p drops, one at or above admits; both count.
        assert!(!t.admit_with(p - 1e-9));
        let p2 = (101.0 - 60.0) / 102.0;
        assert_eq!(t.rejection_probability(), p2);
        assert!(t.admit_with(p2));
        assert_eq!(t.counts(), (102, 30));

        // Enough accepts: no throttling at all, never a negative probability.
        let healthy = AdaptiveThrottle::new(settings());
        feed(&healthy, 100, 60);
        assert_eq!(healthy.rejection_probability(), 0.0);

        // K is a setting: K = 1 throttles as soon as anything is rejected.
        let strict = AdaptiveThrottle::new(ThrottleSettings {
            k: 1.0,
            ..settings()
        });
        feed(&strict, 100, 60);
        assert_eq!(strict.rejection_probability(), 40.0 / 101.0);
    }

    #[tokio::test(start_paused = true)]
    async fn random_draws_drop_about_the_expected_share() {
        // Large counts, so that the draws below barely move the probability.
        let t = AdaptiveThrottle::new(settings());
        for _ in 0..1_000_000 {
            bump(&t.slice(t.tag()).requests, t.tag());
        }
        for _ in 0..250_000 {
            t.accepted();
        }
        let p = t.rejection_probability();
        assert!((p - 0.5).abs() < 0.001, "{p}");
        let dropped = (0..20_000).filter(|_| !t.admit()).count();
        let share = dropped as f64 / 20_000.0;
        // 20,000 draws: the standard deviation is 0.0035.
        assert!((share - 0.5).abs() < 0.03, "dropped {share}");
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_fades_out_after_the_window_once_rejections_stop() {
        let t = AdaptiveThrottle::new(settings());
        feed(&t, 100, 0);
        let flooded = t.rejection_probability();
        assert!(flooded > 0.9, "{flooded}");

        // Half a window later, the backend accepts everything again: the
        // probability falls as accepts come in, before the window ends.
        tokio::time::advance(Duration::from_secs(60)).await;
        feed(&t, 40, 40);
        let recovering = t.rejection_probability();
        assert!(recovering < flooded && recovering > 0.0, "{recovering}");

        // Once the rejected requests' slices leave the window: nothing left.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(t.counts(), (40, 40));
        assert_eq!(t.rejection_probability(), 0.0);

        // And with no traffic at all, everything ages out.
        tokio::time::advance(Duration::from_secs(120)).await;
        assert_eq!(t.counts(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reused_slice_starts_from_zero() {
        let t = AdaptiveThrottle::new(settings());
        feed(&t, 50, 10);
        // Exactly one window later the same slice index comes round again.
        tokio::time::advance(Duration::from_secs(120)).await;
        feed(&t, 3, 1);
        assert_eq!(t.counts(), (3, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_throttles_are_bounded_and_forget_idle_keys() {
        let keyed = KeyedThrottles::new(settings(), 2);
        let a = keyed.get("a").unwrap();
        a.admit();
        assert!(Arc::ptr_eq(&a, &keyed.get("a").unwrap()));
        keyed.get("b").unwrap().admit();
        // Full, and both keys active: a third key goes unthrottled.
        assert!(keyed.get("c").is_none());
        assert_eq!(keyed.len(), 2);
        // A window later both are idle: room is made.
        tokio::time::advance(Duration::from_secs(121)).await;
        assert!(keyed.get("c").is_some());
        assert_eq!(keyed.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_map_is_swept_at_most_once_a_slice() {
        // A 1.2 s window: 100 ms slices.
        let short = ThrottleSettings {
            window: Duration::from_millis(1_200),
            ..settings()
        };
        let keyed = KeyedThrottles::new(short, 1);
        keyed.get("a").unwrap().admit();
        tokio::time::advance(Duration::from_millis(1_150)).await;
        assert!(keyed.get("b").is_none(), "full, and a is still active");
        // 50 ms later a has left the window, but the last sweep was less
        // than a slice ago: no new sweep, no room.
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(keyed.get("a").unwrap().counts(), (0, 0));
        assert!(keyed.get("b").is_none());
        // A slice after the sweep: swept, room made.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(keyed.get("b").is_some());
        assert_eq!(keyed.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn recorded_outcomes_count_like_admitted_ones() {
        let t = AdaptiveThrottle::new(settings());
        for i in 0..30 {
            t.record(i < 5);
        }
        assert_eq!(t.counts(), (30, 5));
        assert_eq!(t.rejection_probability(), 20.0 / 31.0);
        // would_drop counts nothing.
        let _ = t.would_drop();
        assert_eq!(t.counts(), (30, 5));
    }
}
