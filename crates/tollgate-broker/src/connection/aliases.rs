//! Server-to-client topic aliases (MQTT 5): which topics one connection sends by alias.
//!
//! Owns one connection's outbound alias table and its admission policy; it does no I/O and
//! builds no packet. [`delivery`](super::delivery) asks it, for each PUBLISH it encodes,
//! whether to send the topic, the topic with an alias, or the alias alone ([`AliasTable::choose`]),
//! and commits the choice only once the packet is known to fit the client's Maximum Packet Size
//! ([`AliasTable::commit`]): the table always says what the client was told.
//!
//! The policy, for "the topics it sends most" within `max` aliases (the client's Topic Alias
//! Maximum, capped by `[mqtt] max_outbound_topic_aliases`):
//! - a topic already in the table is sent as its alias alone, and becomes the most recently
//!   used;
//! - a new topic takes a free alias while there is one (sent with its topic name);
//! - when every alias is taken, a new topic replaces the least recently used alias only on its
//!   second sighting: the first is remembered in a small ring of topic hashes ([`CANDIDATES`]
//!   entries), so one-off topics pass through without evicting anything. Replacing an alias
//!   sends the new topic name with it, which the client takes as the new mapping.
//!
//! The table is made on the first PUBLISH to a client that allows aliases (a 3.1.1 or
//! alias-less client, or an idle one, pays nothing) and lives with its connection: a new
//! connection, a resumed session included, starts with an empty table (MQTT 5 3.3.2.3.4).
//! Least-recently-used order is an intrusive list over the slots, so every operation is O(1)
//! apart from hashing the topic once (twice when it is admitted by eviction).

use std::collections::HashMap;
use std::hash::BuildHasher;

use tollgate_mqtt::ByteString;

/// Topics seen once while the table was full, remembered to admit them on a second sighting.
pub(crate) const CANDIDATES: usize = 32;

/// No slot (the ends of the recency list).
const NIL: u16 = u16::MAX;

/// What to put in one PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    /// The client knows this alias for the topic: send the alias alone.
    Known(u16),
    /// Send the topic with this alias (a free one, or the least recently used one replaced).
    Assign(u16),
    /// Send the topic without an alias.
    Plain,
}

struct Slot {
    topic: ByteString,
    /// Towards the most recently used.
    prev: u16,
    /// Towards the least recently used.
    next: u16,
}

/// One connection's server-to-client topic aliases (alias `n` is slot `n - 1`).
pub(crate) struct AliasTable {
    max: u16,
    slots: Vec<Slot>,
    by_topic: HashMap<ByteString, u16>,
    /// Most recently used slot.
    head: u16,
    /// Least recently used slot: the one a new topic replaces.
    tail: u16,
    /// Hashes of topics seen once while the table was full (0: empty).
    candidates: [u64; CANDIDATES],
    next_candidate: usize,
    /// Bytes that assigning aliases cost (the property on the first use) not yet paid back by
    /// alias-only sends: the bytes-saved counter only counts net savings.
    debt: u64,
}

impl AliasTable {
    /// An empty table for aliases `1..=max` (`max` ≥ 1; nothing is allocated until used).
    pub fn new(max: u16) -> AliasTable {
        AliasTable {
            max: max.clamp(1, NIL - 1),
            slots: Vec::new(),
            by_topic: HashMap::new(),
            head: NIL,
            tail: NIL,
            candidates: [0; CANDIDATES],
            next_candidate: 0,
            debt: 0,
        }
    }

    /// How to send `topic` now. Changes nothing but the candidate ring: call
    /// [`AliasTable::commit`] with the choice once the packet is on its way.
    pub fn choose(&mut self, topic: &ByteString) -> Choice {
        if let Some(&alias) = self.by_topic.get(topic) {
            return Choice::Known(alias);
        }
        if self.slots.len() < usize::from(self.max) {
            // Slots are filled in order, so the next free alias is the next slot.
            return u16::try_from(self.slots.len() + 1).map_or(Choice::Plain, Choice::Assign);
        }
        let h = self.candidate_hash(topic);
        if self.candidates.contains(&h) && self.tail != NIL {
            return Choice::Assign(self.tail + 1);
        }
        if let Some(c) = self.candidates.get_mut(self.next_candidate) {
            *c = h;
        }
        self.next_candidate = (self.next_candidate + 1) % CANDIDATES;
        Choice::Plain
    }

    /// `topic` was sent as `choice` said: record it.
    pub fn commit(&mut self, topic: &ByteString, choice: Choice) {
        match choice {
            Choice::Plain => {}
            Choice::Known(alias) => self.touch(alias - 1),
            Choice::Assign(alias) => {
                let i = alias - 1;
                if usize::from(i) == self.slots.len() {
                    self.slots.push(Slot {
                        topic: topic.clone(),
                        prev: NIL,
                        next: NIL,
                    });
                    self.push_front(i);
                } else {
                    let h = self.candidate_hash(topic);
                    for c in self.candidates.iter_mut().filter(|c| **c == h) {
                        *c = 0;
                    }
                    if let Some(slot) = self.slots.get_mut(usize::from(i)) {
                        let old = std::mem::replace(&mut slot.topic, topic.clone());
                        self.by_topic.remove(&old);
                    }
                    self.touch(i);
                }
                self.by_topic.insert(topic.clone(), alias);
            }
        }
    }

    /// Net bytes saved by one PUBLISH that would have been `plain` bytes and was `sent`:
    /// what alias-only sends save pays back what assignments cost first.
    pub fn saved(&mut self, plain: usize, sent: usize) -> u64 {
        let (plain, sent) = (plain as u64, sent as u64);
        if sent > plain {
            self.debt = self.debt.saturating_add(sent - plain);
            return 0;
        }
        let gain = plain - sent;
        let paid = gain.min(self.debt);
        self.debt -= paid;
        gain - paid
    }

    fn candidate_hash(&self, topic: &ByteString) -> u64 {
        // 0 marks an empty entry; a collision only admits a topic one sighting early.
        self.by_topic.hasher().hash_one(topic) | 1
    }

    /// Make slot `i` the most recently used.
    fn touch(&mut self, i: u16) {
        if self.head == i {
            return;
        }
        self.unlink(i);
        self.push_front(i);
    }

    fn unlink(&mut self, i: u16) {
        let Some((prev, next)) = self.slots.get(usize::from(i)).map(|s| (s.prev, s.next)) else {
            return;
        };
        match self.slots.get_mut(usize::from(prev)) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.slots.get_mut(usize::from(next)) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn push_front(&mut self, i: u16) {
        let old_head = self.head;
        if let Some(s) = self.slots.get_mut(usize::from(i)) {
            s.prev = NIL;
            s.next = old_head;
        }
        match self.slots.get_mut(usize::from(old_head)) {
            Some(h) => h.prev = i,
            None => self.tail = i,
        }
        self.head = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Send `topic` through the table as a connection would; returns the choice.
    fn send(t: &mut AliasTable, topic: &str) -> Choice {
        let topic = ByteString::from(topic);
        let c = t.choose(&topic);
        t.commit(&topic, c);
        c
    }

    #[test]
    fn new_topics_take_free_aliases_in_order_and_repeats_go_by_alias() {
        let mut t = AliasTable::new(3);
        assert_eq!(send(&mut t, "a/1"), Choice::Assign(1));
        assert_eq!(send(&mut t, "a/2"), Choice::Assign(2));
        assert_eq!(send(&mut t, "a/1"), Choice::Known(1));
        assert_eq!(send(&mut t, "a/3"), Choice::Assign(3));
        assert_eq!(send(&mut t, "a/2"), Choice::Known(2));
        assert_eq!(send(&mut t, "a/3"), Choice::Known(3));
    }

    #[test]
    fn a_full_table_admits_a_new_topic_on_its_second_sighting_in_place_of_the_least_recently_used()
    {
        let mut t = AliasTable::new(2);
        send(&mut t, "a/1");
        send(&mut t, "a/2");
        send(&mut t, "a/1"); // a/2 is now the least recently used
        assert_eq!(send(&mut t, "b/1"), Choice::Plain, "first sighting");
        assert_eq!(send(&mut t, "b/1"), Choice::Assign(2), "second sighting");
        assert_eq!(send(&mut t, "b/1"), Choice::Known(2));
        assert_eq!(send(&mut t, "a/1"), Choice::Known(1), "kept");
        // a/2 lost its alias: it is a candidate again like any new topic.
        assert_eq!(send(&mut t, "a/2"), Choice::Plain);
        assert_eq!(
            send(&mut t, "a/2"),
            Choice::Assign(2),
            "b/1 was the least recently used"
        );
    }

    #[test]
    fn one_off_topics_do_not_churn_a_full_table() {
        let mut t = AliasTable::new(4);
        for i in 0..4 {
            send(&mut t, &format!("hot/{i}"));
        }
        for i in 0..1000 {
            assert_eq!(send(&mut t, &format!("once/{i}")), Choice::Plain);
        }
        for i in 0..4 {
            assert_eq!(send(&mut t, &format!("hot/{i}")), Choice::Known(i + 1));
        }
    }

    #[test]
    fn the_candidate_ring_is_bounded_and_forgets_the_oldest_sightings() {
        let mut t = AliasTable::new(1);
        send(&mut t, "hot");
        assert_eq!(send(&mut t, "cold"), Choice::Plain);
        for i in 0..CANDIDATES {
            send(&mut t, &format!("once/{i}"));
        }
        assert_eq!(
            send(&mut t, "cold"),
            Choice::Plain,
            "its sighting was pushed out"
        );
        assert_eq!(send(&mut t, "cold"), Choice::Assign(1));
        assert_eq!(t.slots.len(), 1);
        assert_eq!(t.by_topic.len(), 1);
    }

    #[test]
    fn nothing_is_recorded_until_commit() {
        let mut t = AliasTable::new(2);
        let topic = ByteString::from("a/1");
        assert_eq!(t.choose(&topic), Choice::Assign(1));
        // Not committed (the packet did not fit): the alias is still free.
        assert_eq!(t.choose(&ByteString::from("a/2")), Choice::Assign(1));
        assert_eq!(send(&mut t, "a/1"), Choice::Assign(1));
        assert_eq!(send(&mut t, "a/1"), Choice::Known(1));
    }

    #[test]
    fn recency_follows_use_across_many_replacements() {
        // A reference model: a plain list in recency order.
        let mut t = AliasTable::new(8);
        let mut model: Vec<(String, u16)> = Vec::new(); // most recent first
        let mut rng = 0x2545_f491_u32;
        for _ in 0..5000 {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            let topic = format!("t/{}", rng % 14);
            let c = send(&mut t, &topic);
            let pos = model.iter().position(|(m, _)| *m == topic);
            match (c, pos) {
                (Choice::Known(a), Some(p)) => {
                    let e = model.remove(p);
                    assert_eq!(e.1, a);
                    model.insert(0, e);
                }
                (Choice::Assign(a), None) => {
                    if model.len() == 8 {
                        let lru = model.pop().map(|e| e.1);
                        assert_eq!(lru, Some(a), "replaced the least recently used");
                    }
                    model.insert(0, (topic, a));
                }
                (Choice::Plain, None) => assert_eq!(model.len(), 8),
                other => panic!("{other:?} for {topic}"),
            }
        }
        assert_eq!(t.by_topic.len(), 8);
    }

    #[test]
    fn savings_are_net_of_what_assignments_cost() {
        let mut t = AliasTable::new(1);
        assert_eq!(t.saved(100, 103), 0);
        assert_eq!(t.saved(100, 30), 67);
        assert_eq!(t.saved(100, 30), 70);
    }
}
