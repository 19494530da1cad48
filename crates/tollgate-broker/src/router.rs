//! The subscription index: a topic trie published as an immutable snapshot.
//!
//! Publishers read the current trie through `arc-swap` without taking any lock; subscribe and
//! unsubscribe (rare, control-ish traffic) build a new version under a writer mutex. Nodes hold
//! `imbl` persistent maps, so a new version shares everything but the path it changed:
//! a subscribe costs O(depth · log n), not a copy of the trie.
//!
//! A subscription the policy grants with some topics withheld (it overlaps a deny rule, see
//! `tollgate_policy::CompiledPolicy::subscription`) carries its [`DeliveryFilter`]; the walk
//! checks it for that subscription only, so subscriptions without one pay a null check per
//! match. A shared group gives a message to a member whose filter admits it (round robin among
//! those, online first); when none does, the match is reported as withheld.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tollgate_mqtt::QoS;
use tollgate_policy::DeliveryFilter;

use crate::session::Session;

/// Options a subscription was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubOpts {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub sub_id: Option<u32>,
}

/// One subscriber of one filter.
#[derive(Clone)]
pub(crate) struct Subscriber {
    pub session: Arc<Session>,
    pub opts: SubOpts,
    /// Topics withheld from this subscription by deny rules it overlaps (`None`: none).
    pub filter: Option<Arc<DeliveryFilter>>,
}

impl Subscriber {
    /// May a message on `topic` (which its filter matches) go through this subscription?
    #[inline]
    pub fn admits(&self, topic: &str) -> bool {
        match &self.filter {
            None => true,
            Some(f) => f.admits(topic),
        }
    }
}

/// A shared-subscription group: one member receives each message, round robin.
pub(crate) struct SharedGroup {
    members: Vec<Subscriber>,
    next: AtomicUsize,
}

impl SharedGroup {
    /// Pick a member for a message on `topic`: round robin among the members whose delivery
    /// filter admits it, preferring one that is online. `None` when no member may receive it.
    pub fn pick(&self, topic: &str) -> Option<&Subscriber> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let in_turn = move || {
            (0..n)
                .filter_map(move |i| self.members.get((start + i) % n))
                .filter(move |s| s.admits(topic))
        };
        in_turn()
            .find(|s| s.session.is_online())
            .or_else(|| in_turn().next())
    }

    /// Any member (for reporting a message no member may receive).
    fn first(&self) -> Option<&Subscriber> {
        self.members.first()
    }
}

#[derive(Clone)]
enum Entry {
    Client(Subscriber),
    Shared(Arc<SharedGroup>),
}

/// Key of an entry at a node: a session id, or a shared group name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Session(u64),
    Group(Arc<str>),
}

#[derive(Clone, Default)]
pub(crate) struct Node {
    /// foldhash (seeded per map): lookups on the publish path hash one level each, and SipHash
    /// was the largest single cost of routing in a fan-in profile.
    children: imbl::GenericHashMap<
        Arc<str>,
        Node,
        foldhash::fast::RandomState,
        imbl::shared_ptr::DefaultSharedPtr,
    >,
    /// Subscribers whose filter ends exactly here.
    here: imbl::OrdMap<Key, Entry>,
    /// Subscribers of `<this node>/#`.
    hash: imbl::OrdMap<Key, Entry>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.here.is_empty() && self.hash.is_empty()
    }
}

/// The subscription index.
pub(crate) struct Router {
    current: ArcSwap<Node>,
    write: Mutex<()>,
}

/// A matched delivery target (before per-session de-duplication).
pub(crate) struct Match<'a> {
    pub sub: &'a Subscriber,
    pub shared: bool,
    /// The subscription matches, but its delivery filter withholds the message (for a shared
    /// group: every member's does). Not to be delivered; counted.
    pub withheld: bool,
}

impl Router {
    pub fn new() -> Router {
        Router {
            current: ArcSwap::from_pointee(Node::default()),
            write: Mutex::new(()),
        }
    }

    /// Add or replace `session`'s subscription to `filter` (`group` for `$share/group/filter`).
    pub fn subscribe(&self, filter: &str, group: Option<&str>, sub: Subscriber) {
        let _w = self.write.lock();
        let mut root = Node::clone(&self.current.load());
        let node = descend_mut(&mut root, filter);
        let (levels_hash, slot) = node;
        let map = if levels_hash {
            &mut slot.hash
        } else {
            &mut slot.here
        };
        match group {
            None => {
                map.insert(Key::Session(sub.session.id), Entry::Client(sub));
            }
            Some(g) => {
                let key = Key::Group(Arc::from(g));
                let mut members = match map.get(&key) {
                    Some(Entry::Shared(grp)) => grp.members.clone(),
                    _ => Vec::new(),
                };
                members.retain(|m| m.session.id != sub.session.id);
                members.push(sub);
                map.insert(
                    key,
                    Entry::Shared(Arc::new(SharedGroup {
                        members,
                        next: AtomicUsize::new(0),
                    })),
                );
            }
        }
        self.current.store(Arc::new(root));
    }

    /// Remove `session_id`'s subscription to `filter`. Returns whether one existed.
    pub fn unsubscribe(&self, filter: &str, group: Option<&str>, session_id: u64) -> bool {
        let _w = self.write.lock();
        let mut root = Node::clone(&self.current.load());
        let removed = remove_path(&mut root, &mut filter.split('/'), group, session_id);
        if removed {
            self.current.store(Arc::new(root));
        }
        removed
    }

    /// Call `f` for every subscription matching `topic`. No allocation, no lock.
    pub fn for_each_match<'g>(&self, guard: &'g Node, topic: &str, f: &mut impl FnMut(Match<'g>)) {
        let dollar = topic.starts_with('$');
        walk(guard, topic, topic, true, dollar, f);
    }

    /// The delivery filter `session_id`'s subscription to `filter` (`group` for
    /// `$share/group/filter`) is routed with now: `None` if it is not routed, `Some(None)` if it
    /// has no filter. Reads the current version; no lock.
    pub fn delivery_filter(
        &self,
        filter: &str,
        group: Option<&str>,
        session_id: u64,
    ) -> Option<Option<Arc<DeliveryFilter>>> {
        let root = self.current.load();
        let mut node: &Node = &root;
        let mut levels = filter.split('/').peekable();
        let mut map = &node.here;
        while let Some(level) = levels.next() {
            if level == "#" && levels.peek().is_none() {
                map = &node.hash;
                break;
            }
            node = node.children.get(level)?;
            map = &node.here;
        }
        let sub = match (group, map) {
            (None, map) => match map.get(&Key::Session(session_id))? {
                Entry::Client(sub) => sub,
                Entry::Shared(_) => return None,
            },
            (Some(g), map) => match map.get(&Key::Group(Arc::from(g)))? {
                Entry::Shared(grp) => grp.members.iter().find(|m| m.session.id == session_id)?,
                Entry::Client(_) => return None,
            },
        };
        Some(sub.filter.clone())
    }

    /// A guard on the current version, valid while held.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Node>> {
        self.current.load()
    }
}

/// Returns (is_hash, node) where the entry for `filter` lives.
fn descend_mut<'a>(root: &'a mut Node, filter: &str) -> (bool, &'a mut Node) {
    let mut node = root;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level == "#" && levels.peek().is_none() {
            return (true, node);
        }
        node = node.children.entry(Arc::from(level)).or_default();
    }
    (false, node)
}

fn remove_path<'a>(
    node: &mut Node,
    levels: &mut impl Iterator<Item = &'a str>,
    group: Option<&str>,
    session_id: u64,
) -> bool {
    match levels.next() {
        None => remove_entry(&mut node.here, group, session_id),
        Some("#") => remove_entry(&mut node.hash, group, session_id),
        Some(level) => {
            let Some(child) = node.children.get_mut(level) else {
                return false;
            };
            let removed = remove_path(child, levels, group, session_id);
            if removed && child.is_empty() {
                node.children.remove(level);
            }
            removed
        }
    }
}

fn remove_entry(map: &mut imbl::OrdMap<Key, Entry>, group: Option<&str>, session_id: u64) -> bool {
    match group {
        None => map.remove(&Key::Session(session_id)).is_some(),
        Some(g) => {
            let key = Key::Group(Arc::from(g));
            let Some(Entry::Shared(grp)) = map.get(&key) else {
                return false;
            };
            let before = grp.members.len();
            let members: Vec<Subscriber> = grp
                .members
                .iter()
                .filter(|m| m.session.id != session_id)
                .cloned()
                .collect();
            let removed = members.len() != before;
            if members.is_empty() {
                map.remove(&key);
            } else if removed {
                map.insert(
                    key,
                    Entry::Shared(Arc::new(SharedGroup {
                        members,
                        next: AtomicUsize::new(0),
                    })),
                );
            }
            removed
        }
    }
}

fn emit<'g>(map: &'g imbl::OrdMap<Key, Entry>, topic: &str, f: &mut impl FnMut(Match<'g>)) {
    for entry in map.values() {
        match entry {
            Entry::Client(sub) => f(Match {
                sub,
                shared: false,
                withheld: !sub.admits(topic),
            }),
            Entry::Shared(grp) => match grp.pick(topic) {
                Some(sub) => f(Match {
                    sub,
                    shared: true,
                    withheld: false,
                }),
                None => {
                    if let Some(sub) = grp.first() {
                        f(Match {
                            sub,
                            shared: true,
                            withheld: true,
                        });
                    }
                }
            },
        }
    }
}

fn walk<'g>(
    node: &'g Node,
    topic: &str,
    rest: &str,
    first: bool,
    dollar: bool,
    f: &mut impl FnMut(Match<'g>),
) {
    // `#` at this node matches the parent level too ("a/#" matches "a"), except at the root
    // for `$` topics.
    if !(first && dollar) {
        emit(&node.hash, topic, f);
    }
    let (level, tail) = match rest.split_once('/') {
        Some((l, t)) => (l, Some(t)),
        None => (rest, None),
    };
    if let Some(child) = node.children.get(level) {
        match tail {
            Some(t) => walk(child, topic, t, false, dollar, f),
            None => {
                emit(&child.here, topic, f);
                emit(&child.hash, topic, f);
            }
        }
    }
    if !(first && dollar) {
        if let Some(child) = node.children.get("+") {
            match tail {
                Some(t) => walk(child, topic, t, false, dollar, f),
                None => {
                    emit(&child.here, topic, f);
                    emit(&child.hash, topic, f);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Session;

    fn sub(id: u64) -> Subscriber {
        Subscriber {
            session: Arc::new(Session::new_for_test(id)),
            opts: SubOpts {
                qos: QoS::AtMostOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
                sub_id: None,
            },
            filter: None,
        }
    }

    /// A subscriber whose delivery filter withholds `denied` (a deny `subscribe` pattern).
    fn filtered(id: u64, filter: &str, denied: &str) -> Subscriber {
        let policy = tollgate_policy::Policy::parse(
            &format!(
                "[[allow]]\nwho = \"*\"\nsubscribe = [\"#\"]\n\
                 [[deny]]\nid = \"no\"\nwho = \"*\"\nsubscribe = [{denied:?}]\n"
            ),
            "test",
        )
        .expect("test policy");
        let compiled = policy.compile(&tollgate_policy::Identity {
            device_id: "d",
            groups: &[],
        });
        let tollgate_policy::SubscriptionDecision::Filtered(f) = compiled.subscription(filter)
        else {
            panic!("{filter} against {denied} is not filtered");
        };
        Subscriber {
            filter: Some(Arc::new(f)),
            ..sub(id)
        }
    }

    /// Who gets a message on `topic` (withheld matches left out).
    fn matches(r: &Router, topic: &str) -> Vec<u64> {
        let g = r.snapshot();
        let mut out = Vec::new();
        r.for_each_match(&g, topic, &mut |m| {
            if !m.withheld {
                out.push(m.sub.session.id)
            }
        });
        out.sort();
        out
    }

    #[test]
    fn a_delivery_filter_withholds_only_its_subscription() {
        let r = Router::new();
        r.subscribe("#", None, filtered(1, "#", "secrets/#"));
        r.subscribe("#", None, sub(2));
        assert_eq!(matches(&r, "a/b"), vec![1, 2]);
        assert_eq!(matches(&r, "secrets/x"), vec![2]);
        assert_eq!(matches(&r, "secrets"), vec![2]);
        let g = r.snapshot();
        let mut withheld = 0;
        r.for_each_match(&g, "secrets/x", &mut |m| {
            withheld += usize::from(m.withheld)
        });
        assert_eq!(withheld, 1);
        assert!(r.delivery_filter("#", None, 1).is_some_and(|f| f.is_some()));
        assert!(r.delivery_filter("#", None, 2).is_some_and(|f| f.is_none()));
        assert!(r.delivery_filter("#", None, 3).is_none());
        // Replacing the subscription replaces its filter.
        r.subscribe("#", None, sub(1));
        assert_eq!(matches(&r, "secrets/x"), vec![1, 2]);
    }

    #[test]
    fn a_shared_group_picks_a_member_whose_filter_admits_the_message() {
        let r = Router::new();
        r.subscribe("t/#", Some("g"), filtered(1, "t/#", "t/secret/#"));
        r.subscribe("t/#", Some("g"), sub(2));
        for _ in 0..10 {
            assert_eq!(matches(&r, "t/secret/1"), vec![2]);
        }
        let mut seen = [0; 3];
        for _ in 0..10 {
            if let [id] = matches(&r, "t/open")[..] {
                seen[id as usize] += 1;
            }
        }
        assert!(seen[1] > 0 && seen[2] > 0, "round robin: {seen:?}");
        assert!(r
            .delivery_filter("t/#", Some("g"), 1)
            .is_some_and(|f| f.is_some()));
        assert!(r.unsubscribe("t/#", Some("g"), 2));
        // Nobody left who may read it: reported as withheld, delivered to none.
        assert_eq!(matches(&r, "t/secret/1"), Vec::<u64>::new());
        let g = r.snapshot();
        let mut withheld = 0;
        r.for_each_match(&g, "t/secret/1", &mut |m| {
            withheld += usize::from(m.withheld)
        });
        assert_eq!(withheld, 1);
    }

    #[test]
    fn wildcards_and_dollar_topics() {
        let r = Router::new();
        r.subscribe("a/+/c", None, sub(1));
        r.subscribe("a/#", None, sub(2));
        r.subscribe("#", None, sub(3));
        r.subscribe("+/b/c", None, sub(4));
        r.subscribe("$SYS/#", None, sub(5));
        r.subscribe("a//c", None, sub(6));
        assert_eq!(matches(&r, "a/b/c"), vec![1, 2, 3, 4]);
        assert_eq!(matches(&r, "a"), vec![2, 3]);
        assert_eq!(matches(&r, "$SYS/x"), vec![5]);
        assert_eq!(matches(&r, "a//c"), vec![1, 2, 3, 6]);
        assert_eq!(matches(&r, "b"), vec![3]);
    }

    #[test]
    fn unsubscribe_prunes_and_old_snapshots_stay_valid() {
        let r = Router::new();
        r.subscribe("x/y", None, sub(1));
        let old = r.snapshot();
        assert!(r.unsubscribe("x/y", None, 1));
        assert!(!r.unsubscribe("x/y", None, 1));
        assert_eq!(matches(&r, "x/y"), Vec::<u64>::new());
        let mut seen = 0;
        r.for_each_match(&old, "x/y", &mut |_| seen += 1);
        assert_eq!(seen, 1);
    }

    #[test]
    fn shared_group_delivers_to_one_member() {
        let r = Router::new();
        r.subscribe("t/#", Some("g"), sub(1));
        r.subscribe("t/#", Some("g"), sub(2));
        let mut counts = [0; 3];
        for _ in 0..10 {
            let got = matches(&r, "t/1");
            assert_eq!(got.len(), 1);
            counts[got[0] as usize] += 1;
        }
        assert!(counts[1] > 0 && counts[2] > 0, "round robin: {counts:?}");
        assert!(r.unsubscribe("t/#", Some("g"), 1));
        assert_eq!(matches(&r, "t/1"), vec![2]);
    }
}
