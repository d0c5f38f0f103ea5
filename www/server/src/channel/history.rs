//! One channel's history: its epoch, its offset counter and the most recent messages, bounded by
//! count, bytes and age; and the recovery query of PROTOCOL.md §8.4. Plain data, no locks, no
//! clock: the time is an input (`now`), so tests drive it.
//!
//! Invariants:
//! - offsets of an epoch are 1, 2, 3, ...; `top` is the last one assigned (0 before any), and
//!   `top <= MAX_OFFSET`;
//! - the entries are a contiguous run of offsets ending at `top` when not empty, oldest first;
//!   `first()` is the front's offset, or `top + 1` when empty, and it never goes down within an
//!   epoch (entries leave oldest first and never come back);
//! - `bytes` is the sum of the entries' sizes (payload, event name and [`ENTRY_BYTES`]);
//! - every entry is charged [`ENTRY_BYTES`] to the global [`ReplayBudget`] while it is held (its
//!   payload is charged once by the [`SharedMessage`] itself, however many holders share it);
//! - arithmetic on a position from a request is checked: no offset, `u64::MAX` included, panics.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::limits::{ReplayBudget, SharedMessage, ENTRY_BYTES};

/// The highest offset a channel assigns (2^53 - 1, the largest integer a JavaScript number holds
/// exactly); the next publish starts a new epoch (PROTOCOL.md §8.2).
pub const MAX_OFFSET: u64 = (1 << 53) - 1;

/// The bounds of one channel's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub max_messages: usize,
    /// Payload, event name and [`ENTRY_BYTES`] per message, summed.
    pub max_bytes: usize,
    pub max_age: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits { max_messages: 1_000, max_bytes: 1 << 20, max_age: Duration::from_secs(300) }
    }
}

/// A message as the channel holds it, and as a replay hands it out.
#[derive(Debug, Clone)]
pub struct ChannelMessage {
    pub offset: u64,
    /// Stored once per publish and shared with every subscriber's replay buffer.
    pub message: Arc<SharedMessage>,
}

#[derive(Debug)]
struct Entry {
    item: ChannelMessage,
    bytes: usize,
    at: Instant,
}

/// The answer to a recovery from a position (PROTOCOL.md §8.4).
#[derive(Debug, Clone)]
pub enum Recovery {
    /// The history holds every message after the position: these, in order (possibly none).
    Replay(Vec<ChannelMessage>),
    /// The client missed offsets `from..=to` of the current epoch and gets none of them.
    /// `from == 0`: the position is not in this epoch (its history was lost, or it was never
    /// reached), so what followed it is unknown as well.
    Gap { from: u64, to: u64 },
}

/// The offsets of the current epoch ran out ([`MAX_OFFSET`]): the caller starts a new epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetsExhausted;

/// One channel's epoch, offset counter and bounded history.
#[derive(Debug)]
pub struct History {
    epoch: u64,
    top: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
    limits: HistoryLimits,
    budget: Arc<ReplayBudget>,
}

impl Drop for History {
    fn drop(&mut self) {
        self.budget.release(self.entries.len().saturating_mul(ENTRY_BYTES));
    }
}

impl History {
    /// An empty history of a new epoch: the next message gets offset 1.
    pub fn new(epoch: u64, limits: HistoryLimits, budget: Arc<ReplayBudget>) -> Self {
        History { epoch, top: 0, entries: VecDeque::new(), bytes: 0, limits, budget }
    }

    /// An empty history that goes on in `epoch` after `top` (a channel revived from its
    /// tombstone): the next message gets offset `top + 1`.
    pub fn resumed(epoch: u64, top: u64, limits: HistoryLimits, budget: Arc<ReplayBudget>) -> Self {
        History { epoch, top: top.min(MAX_OFFSET), entries: VecDeque::new(), bytes: 0, limits, budget }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The last offset assigned in this epoch (0 before the first message).
    pub fn top(&self) -> u64 {
        self.top
    }

    /// The oldest offset held, or `top + 1` when nothing is.
    pub fn first(&self) -> u64 {
        self.entries.front().map_or(self.top.saturating_add(1), |entry| entry.item.offset)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held (payloads, event names and [`ENTRY_BYTES`] each).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Tests: as if offsets up to `top` had been assigned and left the history.
    #[cfg(test)]
    pub(crate) fn skip_to(&mut self, top: u64) {
        self.renew(self.epoch.wrapping_add(1));
        self.epoch = self.epoch.wrapping_sub(1);
        self.top = top;
    }

    /// Forgets everything and starts `epoch` (which the caller chose different from this one):
    /// the next message gets offset 1.
    pub fn renew(&mut self, epoch: u64) {
        debug_assert_ne!(epoch, self.epoch, "a new epoch must differ from the one it replaces");
        self.budget.release(self.entries.len().saturating_mul(ENTRY_BYTES));
        self.entries.clear();
        self.bytes = 0;
        self.top = 0;
        self.epoch = epoch;
    }

    /// Appends a message with the next offset, then trims to the limits (the new message too,
    /// when it alone is over the byte limit: it still got its offset and was delivered live).
    pub fn push(&mut self, message: Arc<SharedMessage>, now: Instant) -> Result<u64, OffsetsExhausted> {
        if self.top >= MAX_OFFSET {
            return Err(OffsetsExhausted);
        }
        self.top += 1;
        let bytes = message.bytes.saturating_add(ENTRY_BYTES);
        self.entries.push_back(Entry { item: ChannelMessage { offset: self.top, message }, bytes, at: now });
        self.bytes = self.bytes.saturating_add(bytes);
        self.budget.charge(ENTRY_BYTES);
        self.trim(now);
        debug_assert!(self.entries.back().is_none_or(|entry| entry.item.offset == self.top));
        Ok(self.top)
    }

    /// Drops the oldest messages while the history is over its count or byte bound, or its
    /// oldest message is older than the age bound at `now`.
    pub fn trim(&mut self, now: Instant) {
        let limits = self.limits;
        while let Some(front) = self.entries.front() {
            let over = self.entries.len() > limits.max_messages
                || self.bytes > limits.max_bytes
                || now.saturating_duration_since(front.at) > limits.max_age;
            if !over {
                break;
            }
            let bytes = front.bytes;
            self.entries.pop_front();
            self.bytes = self.bytes.saturating_sub(bytes);
            self.budget.release(ENTRY_BYTES);
        }
    }

    /// The recovery of a client that delivered every message of `epoch` up to `offset`
    /// (PROTOCOL.md §8.4, cases 1-3). Trim first (see [`Self::trim`]) so the age bound holds.
    pub fn since(&self, epoch: u64, offset: u64) -> Recovery {
        if epoch != self.epoch || offset > self.top {
            return Recovery::Gap { from: 0, to: self.top };
        }
        // offset <= top <= MAX_OFFSET, so the addition cannot overflow; checked all the same.
        let Some(after) = offset.checked_add(1) else {
            return Recovery::Gap { from: 0, to: self.top };
        };
        if after < self.first() {
            return Recovery::Gap { from: after, to: self.top };
        }
        let start = self.entries.partition_point(|entry| entry.item.offset <= offset);
        Recovery::Replay(self.entries.range(start..).map(|entry| entry.item.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use realtime_client::core::wire::Payload;

    fn message(budget: &Arc<ReplayBudget>, text: &str) -> Arc<SharedMessage> {
        budget.share(None, Payload::Text(text.to_owned()))
    }

    fn offsets(recovery: &Recovery) -> Option<Vec<u64>> {
        match recovery {
            Recovery::Replay(items) => Some(items.iter().map(|item| item.offset).collect()),
            Recovery::Gap { .. } => None,
        }
    }

    fn gap(recovery: &Recovery) -> Option<(u64, u64)> {
        match recovery {
            Recovery::Gap { from, to } => Some((*from, *to)),
            Recovery::Replay(_) => None,
        }
    }

    #[test]
    fn offsets_start_at_one_and_replay_follows_the_position() {
        let budget = Arc::new(ReplayBudget::default());
        let mut history = History::new(7, HistoryLimits::default(), budget.clone());
        let now = Instant::now();
        assert_eq!(history.first(), 1);
        assert_eq!(offsets(&history.since(7, 0)), Some(vec![]));
        for (index, text) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(history.push(message(&budget, text), now), Ok(index as u64 + 1));
        }
        assert_eq!(offsets(&history.since(7, 1)), Some(vec![2, 3]));
        assert_eq!(offsets(&history.since(7, 3)), Some(vec![]));
        let Recovery::Replay(items) = history.since(7, 0) else { panic!("covered") };
        let texts: Vec<_> = items.iter().map(|item| item.message.payload.clone()).collect();
        assert_eq!(texts, vec![Payload::Text("a".into()), Payload::Text("b".into()), Payload::Text("c".into())]);
    }

    #[test]
    fn unknown_positions_are_gaps_from_zero_and_never_panic() {
        let budget = Arc::new(ReplayBudget::default());
        let mut history = History::new(7, HistoryLimits::default(), budget.clone());
        history.push(message(&budget, "a"), Instant::now()).unwrap();
        assert_eq!(gap(&history.since(8, 0)), Some((0, 1)), "another epoch");
        assert_eq!(gap(&history.since(7, 2)), Some((0, 1)), "a position this epoch never reached");
        assert_eq!(gap(&history.since(7, u64::MAX)), Some((0, 1)));
        assert_eq!(gap(&history.since(u64::MAX, u64::MAX)), Some((0, 1)));
    }

    #[test]
    fn count_bytes_and_age_bounds_trim_oldest_first_and_gaps_name_what_was_missed() {
        let budget = Arc::new(ReplayBudget::default());
        let limits = HistoryLimits { max_messages: 3, max_bytes: 3 * (ENTRY_BYTES + 10), max_age: Duration::from_secs(10) };
        let mut history = History::new(1, limits, budget.clone());
        let start = Instant::now();
        for _ in 0..5 {
            history.push(message(&budget, "0123456789"), start).unwrap();
        }
        assert_eq!((history.first(), history.top(), history.len()), (3, 5, 3), "count bound");
        assert_eq!(gap(&history.since(1, 1)), Some((2, 5)), "never a partial replay");
        assert_eq!(offsets(&history.since(1, 2)), Some(vec![3, 4, 5]));
        history.push(message(&budget, &"x".repeat(25)), start).unwrap();
        assert_eq!((history.first(), history.len()), (5, 2), "byte bound: 10 + 25 + two entries");
        history.trim(start + Duration::from_secs(11));
        assert!(history.is_empty(), "age bound");
        assert_eq!(history.first(), 7);
        assert_eq!(offsets(&history.since(1, 6)), Some(vec![]), "an empty history still covers the top");
        assert_eq!(gap(&history.since(1, 5)), Some((6, 6)));
        assert_eq!(budget.used(), 0, "entries give back their charge; the messages were dropped");
    }

    #[test]
    fn a_message_over_the_byte_bound_gets_its_offset_and_is_not_kept() {
        let budget = Arc::new(ReplayBudget::default());
        let limits = HistoryLimits { max_bytes: 100, ..HistoryLimits::default() };
        let mut history = History::new(1, limits, budget.clone());
        assert_eq!(history.push(message(&budget, &"x".repeat(200)), Instant::now()), Ok(1));
        assert!(history.is_empty());
        assert_eq!(history.first(), 2);
    }

    #[test]
    fn offsets_run_out_at_max_offset_and_renew_starts_again_at_one() {
        let budget = Arc::new(ReplayBudget::default());
        let mut history = History::new(1, HistoryLimits::default(), budget.clone());
        history.skip_to(MAX_OFFSET - 1);
        assert_eq!(history.push(message(&budget, "a"), Instant::now()), Ok(MAX_OFFSET));
        assert_eq!(history.push(message(&budget, "b"), Instant::now()), Err(OffsetsExhausted));
        assert_eq!(offsets(&history.since(1, MAX_OFFSET - 1)), Some(vec![MAX_OFFSET]));
        history.renew(2);
        assert_eq!((history.epoch(), history.top(), history.len(), history.bytes()), (2, 0, 0, 0));
        assert_eq!(gap(&history.since(1, MAX_OFFSET)), Some((0, 0)));
        assert_eq!(history.push(message(&budget, "c"), Instant::now()), Ok(1));
        drop(history);
        assert_eq!(budget.used(), 0);
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Publish a payload of this many bytes.
        Publish(usize),
        /// Let this many milliseconds pass.
        Wait(u64),
        /// Trim at the current time.
        Trim,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0usize..300).prop_map(Step::Publish),
            2 => (0u64..4_000).prop_map(Step::Wait),
            1 => Just(Step::Trim),
        ]
    }

    /// The oldest index of `log` (all of the epoch's messages: bytes, publish time) that the
    /// bounds keep at `now`: the longest suffix within the count and byte bounds whose oldest
    /// message is not too old. Computed over the whole log, not incrementally as `History` does.
    fn kept_from(log: &[(usize, Instant)], limits: HistoryLimits, now: Instant) -> usize {
        (0..=log.len())
            .find(|&start| {
                let suffix = log.get(start..).unwrap_or_default();
                let bytes: usize = suffix.iter().map(|(bytes, _)| bytes + ENTRY_BYTES).sum();
                suffix.len() <= limits.max_messages
                    && bytes <= limits.max_bytes
                    && suffix.first().is_none_or(|(_, at)| now.saturating_duration_since(*at) <= limits.max_age)
            })
            .unwrap_or(log.len())
    }

    proptest! {
        #[test]
        fn recovery_is_exactly_what_follows_the_position_or_one_gap(
            steps in proptest::collection::vec(step(), 0..120),
            max_messages in 1usize..40,
            max_bytes in 0usize..6_000,
            max_age_ms in 0u64..20_000,
            probes in proptest::collection::vec((any::<bool>(), 0u64..140, any::<u64>()), 1..24),
        ) {
            let budget = Arc::new(ReplayBudget::default());
            let limits = HistoryLimits { max_messages, max_bytes, max_age: Duration::from_millis(max_age_ms) };
            let epoch = 0x5eed;
            let mut history = History::new(epoch, limits, budget.clone());
            let start = Instant::now();
            let mut now = start;
            let mut log: Vec<(usize, Instant)> = Vec::new();
            // The model's oldest kept index: entries that left never come back.
            let mut first_kept = 0usize;
            for step in steps {
                match step {
                    Step::Publish(size) => {
                        let offset = history.push(message(&budget, &"p".repeat(size)), now).unwrap();
                        log.push((size, now));
                        prop_assert_eq!(offset, log.len() as u64);
                    }
                    Step::Wait(ms) => now += Duration::from_millis(ms),
                    Step::Trim => history.trim(now),
                }
                if !matches!(step, Step::Wait(_)) {
                    first_kept = first_kept.max(kept_from(&log, limits, now));
                }
                prop_assert_eq!(history.first(), first_kept as u64 + 1);
            }
            let top = log.len() as u64;
            for (same_epoch, near, far) in probes {
                // Mostly positions near the history, sometimes anything at all (u64::MAX included).
                let offset = if near < 130 { near } else { far };
                let asked_epoch = if same_epoch { epoch } else { far | 1 ^ epoch };
                let recovery = history.since(asked_epoch, offset);
                if asked_epoch != epoch || offset > top {
                    prop_assert_eq!(gap(&recovery), Some((0, top)));
                } else if offset >= first_kept as u64 {
                    let Recovery::Replay(items) = recovery else {
                        return Err(TestCaseError::fail("covered position answered with a gap"));
                    };
                    let expected: Vec<u64> = (offset + 1..=top).collect();
                    prop_assert_eq!(items.iter().map(|item| item.offset).collect::<Vec<_>>(), expected);
                    for item in &items {
                        let size = log[(item.offset - 1) as usize].0;
                        prop_assert_eq!(&item.message.payload, &Payload::Text("p".repeat(size)));
                    }
                } else {
                    prop_assert_eq!(gap(&recovery), Some((offset + 1, top)));
                }
            }
            drop(history);
            prop_assert_eq!(budget.used(), 0);
        }
    }
}
