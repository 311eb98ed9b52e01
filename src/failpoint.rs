//! Failpoints for the crash tests: `ENGINE_FAILPOINT=NAME` (or `NAME#N`, the N-th time it is
//! reached) holds the process at the named point, after printing `failpoint NAME reached` on
//! stderr, until it is killed. Unset (always, outside tests), a failpoint costs one lookup of a
//! cached environment variable.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// The failpoint asked for, and how many times each name has been reached.
struct Armed {
    name: String,
    hit: usize,
    seen: Mutex<HashMap<String, usize>>,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("ENGINE_FAILPOINT").ok().filter(|s| !s.is_empty())?;
            let (name, hit) = match spec.rsplit_once('#') {
                Some((n, h)) => (n.to_string(), h.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some(Armed { name, hit, seen: Mutex::new(HashMap::new()) })
        })
        .as_ref()
}

/// Holds the process here when this is the armed failpoint's `N`-th visit.
pub fn reach(name: &str) {
    let Some(a) = armed() else { return };
    if a.name != name {
        return;
    }
    let count = {
        let mut seen = a.seen.lock().unwrap_or_else(|p| p.into_inner());
        let c = seen.entry(name.to_string()).or_insert(0);
        *c += 1;
        *c
    };
    if count == a.hit {
        eprintln!("failpoint {name} reached");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
