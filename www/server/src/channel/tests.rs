//! Tests of channel names, epochs, positions and the registry's lifecycle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use realtime_client::core::wire::Payload;

use super::*;

fn registry(config: ChannelConfig) -> (Registry, Arc<ReplayBudget>) {
    let budget = Arc::new(ReplayBudget::default());
    // Epochs 100, 101, 102, ... in creation order.
    let next = Arc::new(AtomicU64::new(100));
    let epochs: EpochSource = Box::new(move || next.fetch_add(1, Ordering::Relaxed));
    (Registry::with_epochs(config, budget.clone(), epochs), budget)
}

fn text(budget: &Arc<ReplayBudget>, text: &str) -> Arc<SharedMessage> {
    budget.share(None, Payload::Text(text.to_owned()))
}

fn replayed(subscribed: &Subscribed) -> Option<Vec<u64>> {
    match &subscribed.recovery {
        Some(Recovery::Replay(items)) => Some(items.iter().map(|item| item.offset).collect()),
        _ => None,
    }
}

#[test]
fn channel_names_follow_the_length_and_alphabet_limits() {
    for name in ["lobby", "prices:EURUSD", "a/b.c_d-e", "0", &"x".repeat(128)] {
        assert!(is_valid_channel_name(name), "{name}");
    }
    for name in ["", &"x".repeat(129), "a b", "price$", "a=b", "é", "a\nb", "a,b"] {
        assert!(!is_valid_channel_name(name), "{name:?}");
    }
    assert!(crate::params::is_valid_room("a:b.c_d-e") && is_valid_channel_name("a:b.c_d-e"), "a room is a channel");
}

#[test]
fn epochs_are_sixteen_lowercase_hex_digits() {
    assert_eq!(encode_epoch(0x9f86_d081_884c_7d65), "9f86d081884c7d65");
    assert_eq!(encode_epoch(1), "0000000000000001");
    for epoch in [0, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
        assert_eq!(parse_epoch(&encode_epoch(epoch)), Some(epoch));
    }
    for bad in ["", "9f86d081884c7d6", "9f86d081884c7d650", "9F86D081884C7D65", "+f86d081884c7d65", "9f86d081884c7d6g"] {
        assert_eq!(parse_epoch(bad), None, "{bad:?}");
    }
}

#[test]
fn since_parameters_parse_an_epoch_and_an_offset_within_u64() {
    assert_eq!(parse_since("9f86d081884c7d65.57"), Some(Position { epoch: 0x9f86_d081_884c_7d65, offset: 57 }));
    assert_eq!(parse_since("0000000000000000.18446744073709551615"), Some(Position { epoch: 0, offset: u64::MAX }));
    for bad in ["9f86d081884c7d65", "9f86d081884c7d65.", "9f86d081884c7d65.18446744073709551616", "9f86d081884c7d65.+1", "9f86d081884c7d65.1.2", ".5", "xyz.5"] {
        assert_eq!(parse_since(bad), None, "{bad:?}");
    }
}

#[test]
fn refusals_carry_the_codes_of_the_protocol() {
    let codes: Vec<_> = [Refusal::BadName, Refusal::TooManyChannels, Refusal::SubscribeRate, Refusal::NotAllowed, Refusal::Closed]
        .into_iter()
        .map(|refusal| (refusal.code(), refusal.reason()))
        .collect();
    assert_eq!(codes, vec![(4010, "bad channel name"), (4011, "too many channels"), (4012, "subscribe rate exceeded"), (4013, "not allowed"), (4014, "channel closed")]);
}

#[test]
fn a_subscriber_recovers_after_a_reset_from_the_history_or_gets_one_gap() {
    let (registry, budget) = registry(ChannelConfig { history: HistoryLimits { max_messages: 3, ..HistoryLimits::default() }, ..ChannelConfig::default() });
    let now = Instant::now();
    let first = registry.subscribe("prices", "s1", None, now).unwrap();
    assert_eq!((first.epoch, first.top, first.recovered()), (100, 0, false));
    assert!(first.recovery.is_none(), "no position: no replay and no gap");
    for offset in 1..=5 {
        let published = registry.publish("prices", text(&budget, "p"), now).unwrap();
        assert_eq!(published, Published { epoch: 100, offset, subscribers: 1 });
    }
    // The session ended (its membership goes with it); a fresh one re-subscribes.
    registry.leave_all("s1", ["prices"]);
    let covered = registry.subscribe("prices", "s2", Some(Position { epoch: 100, offset: 3 }), now).unwrap();
    assert!(covered.recovered());
    assert_eq!((covered.top, replayed(&covered)), (5, Some(vec![4, 5])));
    let missed = registry.subscribe("prices", "s3", Some(Position { epoch: 100, offset: 1 }), now).unwrap();
    assert!(!missed.recovered());
    assert!(matches!(missed.recovery, Some(Recovery::Gap { from: 2, to: 5 })));
    let other_epoch = registry.subscribe("prices", "s4", Some(Position { epoch: 7, offset: u64::MAX }), now).unwrap();
    assert!(matches!(other_epoch.recovery, Some(Recovery::Gap { from: 0, to: 5 })));
    assert_eq!(registry.subscribers("prices"), 3);
    // The same session subscribing again is the same membership.
    registry.subscribe("prices", "s4", None, now).unwrap();
    assert_eq!(registry.subscribers("prices"), 3);
}

#[test]
fn a_channel_lives_while_it_has_a_subscriber_or_history_and_without_a_tombstone_comes_back_in_a_new_epoch() {
    let limits = HistoryLimits { max_age: Duration::from_secs(10), ..HistoryLimits::default() };
    // No tombstones here (their tests are below): a freed channel is forgotten.
    let (registry, budget) = registry(ChannelConfig { history: limits, tombstone_lifetime: Duration::ZERO, ..ChannelConfig::default() });
    let start = Instant::now();
    registry.subscribe("room", "s1", None, start).unwrap();
    registry.subscribe("room", "s2", None, start).unwrap();
    registry.unsubscribe("room", "s1");
    registry.unsubscribe("room", "s1");
    assert_eq!(registry.subscribers("room"), 1, "a repeated unsubscribe does not take another member");
    registry.unsubscribe("room", "s2");
    assert!(registry.is_empty(), "no subscriber and no history: freed at once");
    registry.unsubscribe("room", "s2");
    assert!(registry.is_empty(), "unsubscribing what is gone is harmless");

    registry.subscribe("room", "s1", None, start).unwrap();
    registry.publish("room", text(&budget, "kept"), start).unwrap();
    registry.unsubscribe("room", "s1");
    assert_eq!(registry.position("room"), Some(Position { epoch: 101, offset: 1 }), "history keeps it for recoveries");
    let recovery = registry.since("room", Position { epoch: 101, offset: 0 }, start + Duration::from_secs(5));
    assert!(matches!(recovery, Some(Recovery::Replay(ref items)) if items.len() == 1));
    drop(recovery);
    registry.sweep(start + Duration::from_secs(5));
    assert_eq!(registry.len(), 1, "still young");
    registry.sweep(start + Duration::from_secs(11));
    assert!(registry.is_empty(), "history aged out and nobody subscribed");
    assert_eq!(budget.used(), 0, "the history's entries and its message were given back");

    let again = registry.subscribe("room", "s1", Some(Position { epoch: 101, offset: 1 }), start + Duration::from_secs(12)).unwrap();
    assert_eq!(again.epoch, 102, "re-created: a new epoch");
    assert!(matches!(again.recovery, Some(Recovery::Gap { from: 0, to: 0 })), "the old position is unknown");
}

#[test]
fn a_backend_publish_creates_the_channel_and_a_message_nobody_keeps_frees_it() {
    let (registry, budget) = registry(ChannelConfig { history: HistoryLimits { max_bytes: 10, ..HistoryLimits::default() }, ..ChannelConfig::default() });
    let now = Instant::now();
    let published = registry.publish("news", text(&budget, "too big for the history"), now).unwrap();
    assert_eq!(published, Published { epoch: 100, offset: 1, subscribers: 0 });
    assert!(registry.is_empty(), "nothing held and nobody subscribed");
}

#[test]
fn limits_refuse_bad_names_and_channels_past_the_total() {
    let (registry, budget) = registry(ChannelConfig { max_channels: 2, ..ChannelConfig::default() });
    let now = Instant::now();
    assert_eq!(registry.subscribe("a b", "s", None, now).unwrap_err(), Refusal::BadName);
    assert_eq!(registry.publish(&"x".repeat(129), text(&budget, "m"), now).unwrap_err(), Refusal::BadName);
    registry.subscribe("one", "s", None, now).unwrap();
    registry.subscribe("two", "s", None, now).unwrap();
    assert_eq!(registry.subscribe("three", "s", None, now).unwrap_err(), Refusal::TooManyChannels);
    assert_eq!(registry.publish("three", text(&budget, "m"), now).unwrap_err(), Refusal::TooManyChannels);
    assert!(registry.subscribe("one", "s", None, now).is_ok(), "an existing channel is not one more");
    registry.unsubscribe("two", "s");
    assert!(registry.subscribe("three", "s", None, now).is_ok(), "a freed channel makes room");
}

#[test]
fn offsets_that_run_out_start_a_new_epoch_at_offset_one() {
    let (registry, budget) = registry(ChannelConfig::default());
    let now = Instant::now();
    registry.subscribe("long", "s", None, now).unwrap();
    registry.skip_to("long", MAX_OFFSET - 1);
    assert_eq!(registry.publish("long", text(&budget, "last"), now).unwrap(), Published { epoch: 100, offset: MAX_OFFSET, subscribers: 1 });
    assert_eq!(registry.publish("long", text(&budget, "first"), now).unwrap(), Published { epoch: 101, offset: 1, subscribers: 1 });
    let recovery = registry.since("long", Position { epoch: 100, offset: MAX_OFFSET }, now);
    assert!(matches!(recovery, Some(Recovery::Gap { from: 0, to: 1 })), "the old epoch's history is gone");
}

#[test]
fn a_batch_is_consecutive_per_channel_all_or_nothing_and_goes_on_in_a_new_epoch_when_offsets_run_out() {
    let (registry, budget) = registry(ChannelConfig { max_channels: 3, ..ChannelConfig::default() });
    let now = Instant::now();
    registry.subscribe("long", "s", None, now).unwrap();
    registry.skip_to("long", MAX_OFFSET - 1);
    let batch = |names: &[usize]| names.iter().map(|&index| (index, text(&budget, "m"))).collect::<Vec<_>>();
    let positions = registry
        .publish_batch(&["long", "new"], batch(&[0, 1, 0, 1, 0]), now, true, |index, published, _, _| (index, published.epoch, published.offset))
        .unwrap();
    assert_eq!(positions, vec![(0, 100, MAX_OFFSET), (1, 101, 1), (0, 102, 1), (1, 101, 2), (0, 102, 2)]);
    // Two more channels would pass the limit of three: refused before any offset is assigned.
    let refused = registry.publish_batch(&["long", "x", "y"], batch(&[0, 1, 2]), now, true, |_, published, _, _| published);
    assert_eq!(refused.unwrap_err(), Refusal::TooManyChannels);
    assert_eq!(registry.position("long"), Some(Position { epoch: 102, offset: 2 }), "nothing published");
    assert_eq!(registry.len(), 2);
    // Without `create`, one missing channel refuses the whole batch.
    let refused = registry.publish_batch(&["long", "x"], batch(&[0, 1]), now, false, |_, published, _, _| published);
    assert_eq!(refused.unwrap_err(), Refusal::Closed);
    assert_eq!(registry.position("long").map(|position| position.offset), Some(2));
}

#[test]
fn a_new_epoch_never_repeats_the_one_it_replaces() {
    let budget = Arc::new(ReplayBudget::default());
    // The source repeats itself twice before it gives a new value.
    let mut draws = vec![5u64, 5, 5, 9].into_iter();
    let registry = Registry::with_epochs(ChannelConfig::default(), budget.clone(), Box::new(move || draws.next().unwrap_or(9)));
    let now = Instant::now();
    registry.subscribe("c", "s", None, now).unwrap();
    registry.skip_to("c", MAX_OFFSET);
    assert_eq!(registry.publish("c", text(&budget, "m"), now).unwrap().epoch, 9);
}

#[test]
fn a_payload_in_a_history_and_in_replay_buffers_is_counted_once() {
    let budget = Arc::new(ReplayBudget::default());
    let mut history = History::new(1, HistoryLimits::default(), budget.clone());
    let message = text(&budget, &"x".repeat(1000));
    let replay_buffers: Vec<_> = (0..50).map(|_| message.clone()).collect();
    history.push(message, Instant::now()).unwrap();
    assert_eq!(budget.used(), 1000 + crate::limits::ENTRY_BYTES, "the payload once, one entry for the history");
    drop(replay_buffers);
    drop(history);
    assert_eq!(budget.used(), 0);
}

mod properties {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Subscribe(usize, usize),
        Unsubscribe(usize, usize),
        Publish(usize, usize),
        Wait(u64),
        Sweep,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0usize..4, 0usize..3).prop_map(|(channel, member)| Op::Subscribe(channel, member)),
            3 => (0usize..4, 0usize..3).prop_map(|(channel, member)| Op::Unsubscribe(channel, member)),
            4 => (0usize..4, 0usize..200).prop_map(|(channel, size)| Op::Publish(channel, size)),
            2 => (0u64..3_000).prop_map(Op::Wait),
            1 => Just(Op::Sweep),
        ]
    }

    proptest! {
        /// Whatever the interleaving: a channel exists exactly while it has a subscriber or holds
        /// history (sweeps aside, an aged history waits for the next touch or sweep); offsets
        /// go up by one within an epoch; a re-created channel gets an epoch it never had; and
        /// the budget gets everything back.
        #[test]
        fn channels_live_while_subscribed_or_holding_history(ops in proptest::collection::vec(op(), 0..150)) {
            let names = ["a", "b:c", "d/e", "f.g"];
            let limits = HistoryLimits { max_messages: 5, max_bytes: 600, max_age: Duration::from_secs(4) };
            let (registry, budget) = registry(ChannelConfig { history: limits, ..ChannelConfig::default() });
            let start = Instant::now();
            let mut now = start;
            let members = ["m0", "m1", "m2"];
            let mut subscribers: HashMap<usize, std::collections::HashSet<usize>> = HashMap::new();
            let mut last: HashMap<usize, Position> = HashMap::new();
            let mut epochs_seen: HashMap<usize, Vec<u64>> = HashMap::new();
            for op in ops {
                match op {
                    Op::Subscribe(channel, member) => {
                        let subscribed = registry.subscribe(names[channel], members[member], None, now).unwrap();
                        subscribers.entry(channel).or_default().insert(member);
                        let seen = epochs_seen.entry(channel).or_default();
                        if last.get(&channel).map(|position| position.epoch) != Some(subscribed.epoch) {
                            prop_assert!(!seen.contains(&subscribed.epoch), "an epoch came back");
                            seen.push(subscribed.epoch);
                        }
                        last.insert(channel, Position { epoch: subscribed.epoch, offset: subscribed.top });
                    }
                    Op::Unsubscribe(channel, member) => {
                        registry.unsubscribe(names[channel], members[member]);
                        subscribers.entry(channel).or_default().remove(&member);
                    }
                    Op::Publish(channel, size) => {
                        let published = registry.publish(names[channel], text(&budget, &"p".repeat(size)), now).unwrap();
                        prop_assert_eq!(published.subscribers, subscribers.get(&channel).map_or(0, |set| set.len()));
                        match last.get(&channel) {
                            Some(position) if position.epoch == published.epoch => prop_assert_eq!(published.offset, position.offset + 1),
                            _ => {
                                prop_assert_eq!(published.offset, 1, "a new epoch starts at 1");
                                let seen = epochs_seen.entry(channel).or_default();
                                prop_assert!(!seen.contains(&published.epoch), "an epoch came back");
                                seen.push(published.epoch);
                            }
                        }
                        last.insert(channel, Position { epoch: published.epoch, offset: published.offset });
                    }
                    Op::Wait(ms) => now += Duration::from_millis(ms),
                    Op::Sweep => registry.sweep(now),
                }
                for (index, name) in names.iter().enumerate() {
                    let subscribed = subscribers.get(&index).map_or(0, |set| set.len());
                    prop_assert_eq!(registry.subscribers(name), subscribed);
                    if subscribed > 0 {
                        prop_assert!(registry.position(name).is_some(), "a subscribed channel exists");
                    }
                    if let Some(position) = registry.position(name) {
                        prop_assert_eq!(Some(position), last.get(&index).copied(), "the registry's top is the last offset seen");
                        let recovery = registry.since(name, position, now);
                        prop_assert!(matches!(recovery, Some(Recovery::Replay(ref items)) if items.is_empty()), "the top is always covered");
                    }
                }
            }
            registry.sweep(now + Duration::from_secs(5));
            for (index, name) in names.iter().enumerate() {
                prop_assert_eq!(registry.position(name).is_some(), subscribers.get(&index).map_or(0, |set| set.len()) > 0, "after every history aged out, only subscribed channels are left");
            }
            drop(registry);
            prop_assert_eq!(budget.used(), 0);
        }
    }
}

/// A channel that held offsets 1..=3, freed at `start + 11 s` (its history aged out, nobody
/// subscribed): its tombstone is (100, 3).
fn freed_channel(lifetime: Duration, max_channels: usize) -> (Registry, Arc<ReplayBudget>, Instant) {
    let limits = HistoryLimits { max_age: Duration::from_secs(10), ..HistoryLimits::default() };
    let (registry, budget) = registry(ChannelConfig { history: limits, tombstone_lifetime: lifetime, max_channels, ..ChannelConfig::default() });
    let start = Instant::now();
    for _ in 0..3 {
        registry.publish("quiet", text(&budget, "m"), start).unwrap();
    }
    registry.sweep(start + Duration::from_secs(11));
    assert!(registry.position("quiet").is_none(), "freed: no subscribers, no history");
    (registry, budget, start + Duration::from_secs(11))
}

#[test]
fn a_freed_channel_revived_within_its_tombstone_goes_on_in_the_same_epoch() {
    let (registry, budget, now) = freed_channel(Duration::from_secs(60), 100);
    assert_eq!(registry.tombstones(), 1);
    // A subscriber at the top recovers with rec=1 and no replay (PROTOCOL §8.11 item 5).
    let at_top = registry.subscribe("quiet", "s1", Some(Position { epoch: 100, offset: 3 }), now).unwrap();
    assert_eq!((at_top.epoch, at_top.top, at_top.recovered(), replayed(&at_top)), (100, 3, true, Some(vec![])));
    assert_eq!(registry.tombstones(), 0, "taken once");
    // One further behind is told exactly what it missed; another epoch is unknown as ever.
    let behind = registry.subscribe("quiet", "s2", Some(Position { epoch: 100, offset: 1 }), now).unwrap();
    assert!(matches!(behind.recovery, Some(Recovery::Gap { from: 2, to: 3 })));
    let other = registry.subscribe("quiet", "s3", Some(Position { epoch: 7, offset: 3 }), now).unwrap();
    assert!(matches!(other.recovery, Some(Recovery::Gap { from: 0, to: 3 })));
    assert_eq!(registry.publish("quiet", text(&budget, "next"), now).unwrap(), Published { epoch: 100, offset: 4, subscribers: 3 });
}

#[test]
fn a_backend_publish_revives_a_tombstone_too_and_an_expired_one_is_a_new_epoch() {
    let (registry, budget, now) = freed_channel(Duration::from_secs(60), 100);
    assert_eq!(registry.publish("quiet", text(&budget, "m"), now).unwrap(), Published { epoch: 100, offset: 4, subscribers: 0 });
    let (registry, _, now) = freed_channel(Duration::from_secs(60), 100);
    registry.sweep(now + Duration::from_secs(61));
    assert_eq!(registry.tombstones(), 0, "expired");
    let fresh = registry.subscribe("quiet", "s", Some(Position { epoch: 100, offset: 3 }), now + Duration::from_secs(61)).unwrap();
    assert_eq!((fresh.epoch, fresh.top), (101, 0));
    assert!(matches!(fresh.recovery, Some(Recovery::Gap { from: 0, to: 0 })));
    let (registry, _, now) = freed_channel(Duration::ZERO, 100);
    assert_eq!(registry.tombstones(), 0, "lifetime zero keeps none");
    assert_eq!(registry.subscribe("quiet", "s", None, now).unwrap().epoch, 101);
}

#[test]
fn tombstones_are_bounded_oldest_first_and_churn_on_one_name_does_not_grow_them() {
    let (registry, budget, now) = freed_channel(Duration::from_secs(60), 2);
    for name in ["b", "c"] {
        registry.subscribe(name, "s", None, now).unwrap();
        registry.unsubscribe(name, "s");
    }
    assert_eq!(registry.tombstones(), 2, "at most max_channels");
    assert_eq!(registry.take_evicted_tombstones(), 1);
    assert_eq!(registry.take_evicted_tombstones(), 0);
    // The oldest (quiet) went: it starts a new epoch; c's is still there.
    assert_eq!(registry.publish("quiet", text(&budget, "m"), now).unwrap().epoch, 103);
    registry.sweep(now);
    let c = registry.subscribe("c", "s", None, now).unwrap();
    assert_eq!(c.epoch, 102, "c keeps its epoch (b got 101)");
    registry.unsubscribe("c", "s");
    for _ in 0..10_000 {
        registry.subscribe("churn", "s", None, now).unwrap();
        registry.unsubscribe("churn", "s");
    }
    assert!(registry.tombstones() <= 2);
    assert!(registry.tombstone_queue() <= 2 * 2 + 64, "queue {}", registry.tombstone_queue());
}
