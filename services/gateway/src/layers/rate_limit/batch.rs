//! Admissions taken from Redis in batches, for callers whose calls keep coming.
//!
//! A caller whose next call reaches this replica while its last batch is still fresh
//! asks Redis for twice as many admissions as that batch held (or as many as it used,
//! if it used fewer), up to the class's cap; this replica hands the extra ones to the
//! caller's following calls without asking Redis again, for up to the hold time.
//!
//! Redis's GCRA stays the one authority: every admission was granted there and charged
//! to the caller's shared bucket, so replicas together never admit more than the
//! limit, and `x-ratelimit-remaining` counts held admissions as spent. What batching
//! gives up is precision the other way: admissions a replica still holds when the
//! caller stops, or moves to another replica, expire unused — at most one batch per
//! replica, and a batch is at most an eighth of the burst. A caller near its limit is
//! granted only what its bucket still holds, and a refused caller asks Redis on every
//! call, as without batching. While one call of a caller asks Redis for a batch, the
//! caller's other calls ask for one admission each, so concurrent calls do not each
//! take a batch.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Decision, Rate};
use crate::layers::auth::Caller;
use crate::methods::MethodClass;

/// How admissions are batched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// Most admissions taken from Redis at once; 1 turns batching off (every call asks).
    pub max: u32,
    /// How long taken admissions wait for calls before they expire unused.
    pub hold: Duration,
}

impl Batching {
    /// Every call asks Redis.
    pub const OFF: Batching = Batching {
        max: 1,
        hold: Duration::ZERO,
    };

    /// The largest batch for a class at `rate`: at most an eighth of its burst, so what
    /// a replica may let expire is a small share of what the caller can spend.
    fn cap(self, rate: Rate) -> u32 {
        self.max.min(rate.burst / 8).max(1)
    }
}

#[derive(Debug)]
struct Held {
    /// Admissions left to hand out.
    left: u32,
    /// Size of the batch they came from.
    taken: u32,
    /// When the admissions left expire.
    until: Instant,
    /// What the bucket held beyond the batch when it was taken.
    remaining: u64,
    /// When the bucket is full again.
    full_at: Instant,
    /// Since when a call has been asking Redis for a batch.
    asking: Option<Instant>,
}

/// The admissions this replica holds, per caller and class.
#[derive(Debug)]
pub(super) struct Batches {
    batching: Batching,
    /// A fast hash, seeded per process: anonymous callers are keyed by address.
    held: Mutex<HashMap<(Caller, MethodClass), Held, foldhash::fast::RandomState>>,
}

impl Batches {
    pub(super) fn new(batching: Batching) -> Self {
        Self {
            batching,
            held: Mutex::default(),
        }
    }

    /// An admission held for `caller`'s call in `class` at `rate`, or else how many
    /// admissions to ask Redis for.
    pub(super) fn take(
        &self,
        caller: Caller,
        class: MethodClass,
        rate: Rate,
    ) -> Result<Decision, u32> {
        let cap = self.batching.cap(rate);
        if cap == 1 {
            return Err(1);
        }
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let Some(h) = held.get_mut(&(caller, class)) else {
            return Err(1);
        };
        if h.left > 0 && now < h.until {
            h.left -= 1;
            return Ok(Decision {
                allowed: true,
                remaining: h.remaining + u64::from(h.left),
                retry_after_us: 0,
                reset_us: micros(h.full_at.saturating_duration_since(now)),
            });
        }
        let hold = self.batching.hold;
        let wanted = if now >= h.until + hold {
            // Quiet for a whole hold since the last batch: start again from one.
            1
        } else if h.left == 0 {
            h.taken.saturating_mul(2).min(cap)
        } else {
            // Expired part-used (`left` may exceed `taken` after batches added up).
            h.taken.saturating_sub(h.left).clamp(1, cap)
        };
        if wanted > 1 {
            if h.asking.is_some_and(|since| now < since + hold) {
                return Err(1);
            }
            h.asking = Some(now);
        }
        Err(wanted)
    }

    /// Records what Redis answered a call of `caller` in `class` at `rate`: `taken`
    /// admissions (0: refused), the first of them this call's (`decision`), the rest
    /// held for the caller's next calls. Returns the call's decision, its `remaining`
    /// counting the admissions still held from earlier batches too.
    pub(super) fn granted(
        &self,
        caller: Caller,
        class: MethodClass,
        rate: Rate,
        taken: u32,
        decision: Decision,
    ) -> Decision {
        if self.batching.cap(rate) == 1 {
            return decision;
        }
        let now = Instant::now();
        let hold = self.batching.hold;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() > 100_000 {
            held.retain(|_, h| now < h.until + hold);
        }
        let entry = held.entry((caller, class));
        if taken == 0 {
            if let Entry::Occupied(mut refused) = entry {
                refused.get_mut().asking = None;
            }
            return decision;
        }
        // What the bucket holds beyond every admission granted so far.
        let beyond = decision.remaining.saturating_sub(u64::from(taken - 1));
        let h = entry.or_insert(Held {
            left: 0,
            taken,
            until: now,
            remaining: beyond,
            full_at: now,
            asking: None,
        });
        let unexpired = if now < h.until { h.left } else { 0 };
        *h = Held {
            left: unexpired + (taken - 1),
            taken,
            until: now + hold,
            remaining: beyond,
            full_at: now + Duration::from_micros(decision.reset_us),
            asking: None,
        };
        Decision {
            remaining: beyond + u64::from(h.left),
            ..decision
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(hold: Duration) -> Batches {
        Batches::new(Batching { max: 8, hold })
    }

    /// What Redis would answer: `taken` admissions with `remaining` left after them.
    fn grant(taken: u32, remaining: u64) -> Decision {
        Decision {
            allowed: true,
            remaining: remaining + u64::from(taken - 1),
            retry_after_us: 0,
            reset_us: 1_000_000,
        }
    }

    /// A busy caller's batches double up to the cap (an eighth of the burst), each
    /// held admission counts down `remaining` by one, and other callers and classes
    /// start from one.
    #[test]
    fn batches_double_up_to_the_cap_and_count_down() {
        let b = batches(Duration::from_secs(60));
        let rate = Rate::new(60, 64).expect("a rate");
        let (alice, read) = (Caller::Unknown, MethodClass::Read);
        let mut asked = Vec::new();
        let mut remaining = Vec::new();
        let mut bucket = 64u64;
        for _ in 0..40 {
            match b.take(alice, read, rate) {
                Ok(d) => remaining.push(d.remaining),
                Err(n) => {
                    asked.push(n);
                    bucket -= u64::from(n);
                    let d = b.granted(alice, read, rate, n, grant(n, bucket));
                    remaining.push(d.remaining);
                }
            }
        }
        assert_eq!(asked, [1, 2, 4, 8, 8, 8, 8, 8]);
        assert_eq!(remaining, (24..64).rev().collect::<Vec<u64>>());
        assert_eq!(b.take(alice, MethodClass::Write, rate).err(), Some(1));
        let bob = Caller::Ip(std::net::Ipv4Addr::LOCALHOST.into());
        assert_eq!(b.take(bob, read, rate).err(), Some(1));
    }

    /// While one call asks for a batch, the caller's concurrent calls ask for one each;
    /// what they bring back adds to what is held rather than replacing it.
    #[test]
    fn one_batch_at_a_time_and_batches_add_up() {
        let b = batches(Duration::from_secs(60));
        let rate = Rate::new(60, 64).expect("a rate");
        let (alice, read) = (Caller::Unknown, MethodClass::Read);
        assert_eq!(b.take(alice, read, rate).err(), Some(1));
        b.granted(alice, read, rate, 1, grant(1, 63));
        assert_eq!(b.take(alice, read, rate).err(), Some(2));
        assert_eq!(b.take(alice, read, rate).err(), Some(1));
        // The single admission comes back first, then the batch.
        assert_eq!(b.granted(alice, read, rate, 1, grant(1, 62)).remaining, 62);
        assert_eq!(b.granted(alice, read, rate, 2, grant(2, 60)).remaining, 61);
        assert_eq!(
            b.take(alice, read, rate).map(|d| d.remaining).ok(),
            Some(60)
        );
        // A refusal ends the asking too.
        assert_eq!(b.take(alice, read, rate).err(), Some(4));
        b.granted(alice, read, rate, 0, grant(1, 0));
        assert_eq!(b.take(alice, read, rate).err(), Some(4));
        b.granted(alice, read, rate, 4, grant(4, 56));
        b.granted(alice, read, rate, 2, grant(2, 54));
        let held: Vec<_> = std::iter::from_fn(|| b.take(alice, read, rate).ok())
            .map(|d| d.remaining)
            .collect();
        assert_eq!(held, [57, 56, 55, 54]);
    }

    /// Held admissions expire with the hold, and a caller quiet for a whole hold
    /// starts again from one.
    #[test]
    fn held_admissions_expire() {
        let b = batches(Duration::ZERO);
        let rate = Rate::new(60, 64).expect("a rate");
        let alice = Caller::Unknown;
        b.granted(alice, MethodClass::Read, rate, 8, grant(8, 50));
        assert_eq!(b.take(alice, MethodClass::Read, rate).err(), Some(1));
    }

    /// Small bursts and `Batching::OFF` never batch.
    #[test]
    fn small_bursts_and_off_ask_for_one() {
        let alice = Caller::Unknown;
        let small = Rate::new(60, 15).expect("a rate");
        let b = batches(Duration::from_secs(60));
        b.granted(alice, MethodClass::Read, small, 1, grant(1, 14));
        assert_eq!(b.take(alice, MethodClass::Read, small).err(), Some(1));

        let off = Batches::new(Batching::OFF);
        let big = Rate::new(60, 64).expect("a rate");
        off.granted(alice, MethodClass::Read, big, 1, grant(1, 63));
        assert_eq!(off.take(alice, MethodClass::Read, big).err(), Some(1));
    }
}
