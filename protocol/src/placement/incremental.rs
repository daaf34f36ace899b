//! A layout's table computed against the previous layout's
//! ([`Layout::next`]).
//!
//! Computing each table from scratch with rendezvous hashing moves, when a
//! member arrives, what rendezvous asks the newcomer to take: its fair share
//! plus or minus chance (about 5 % at 1,000 members), so a few arrivals in a
//! hundred moved more than 1.1 times the share. With the previous table in
//! hand nothing needs to be left to chance: keep what may stay, and move
//! only what the change asks for.
//!
//! 1. **Keep.** Every (partition, member) pair of the previous table whose
//!    member is still present stays, in its order (the primary stays the
//!    primary). Where the zone rule changed (a member moved zone, a zone
//!    appeared or emptied, the member count crossed the replication
//!    factor), a row the new rule does not allow gives up the members
//!    furthest over their share until it does.
//! 2. **Bands.** Every member gets a band `[low, high]` of loads:
//!    * unchanged (same zone, same capacity): `[0, cap]`. It asks for
//!      nothing and is asked for nothing, except to stay under its cap;
//!    * new, or moved to another zone: its fair share rounded down and up;
//!    * capacity changed: its previous load scaled by how its share
//!      changed, `low` never above the share (nor below [`LOW_FLOOR`] of
//!      it), `high` never below the share (nor above the cap).
//! 3. **Fill.** Every empty slot takes, among the members the row may take
//!    (not a replica yet, zone rule), the first in taker order: under
//!    `low`, then under `high`, then under the cap, each by lowest
//!    `load / share`. Slots the zone rule reserves for zones under their
//!    fewest go first, so a zone whose share grew finds open slots. A row
//!    that lost its primary then makes primary the replica with the fewest
//!    primaries for its load.
//! 4. **Take.** While a member is under `low`, it takes a partition from the
//!    first in giver order: over `high`, then over `low`, each by highest
//!    `load / share`; the taker gets the slot the giver held.
//! 5. **Give.** While a member is over `high`, it gives a partition to the
//!    first in taker order under `high` (under the cap if it is over its
//!    own cap). A member over its cap that nobody with room may take from
//!    passes one down the shortest chain of members to one with room.
//! 6. **Repay.** A member under [`LOW_FLOOR`] of its share (left there by
//!    earlier changes, see below) takes from the members furthest over
//!    theirs, at most [`REPAY_SHARE`] of what this change moved.
//!
//! Why this moves the least: an arrival's only band that asks for moves is
//! the newcomer's, so it takes its share rounded down (from the members
//! furthest over theirs, so balance improves) and nothing else moves,
//! unless some member is over its lowered cap and the newcomer cannot take
//! that excess. A departure asks only that its slots be filled. A capacity
//! change asks for the scaled change of that one member. A slot already
//! moved in this change is moved again in preference (no second copy).
//! Where every zone holds a fixed number of each partition's replicas (one
//! zone, or as many zones as replicas) and no share is held down by the
//! limit of one replica per partition, this is the least any table could
//! move. Elsewhere a change can shift shares between zones: the unchanged
//! members' wide band lets that wait rather than move now; what waits
//! too long lands under [`LOW_FLOOR`] and is repaid a little at a time, or
//! over a cap, which is always enforced.
//!
//! Deterministic: no hashes, clocks or floating point beyond IEEE basic
//! operations, fixed iteration orders, ties to the lower member index.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use super::{Basis, Layout, Member, MemberIndex, ZoneRule};

/// A slot not filled yet (member indexes stop at [`super::MAX_MEMBERS`]).
const HOLE: MemberIndex = MemberIndex(u16::MAX);

/// Below this fraction of its fair share a member is in debt: it is topped
/// up from the members furthest over their share, within [`REPAY_SHARE`].
pub(super) const LOW_FLOOR: f64 = 0.8;

/// The most a change spends on debts, as a share of what it must move.
pub(super) const REPAY_SHARE: f64 = 0.05;

/// The most (giver, taker) pairs a chain search of `State::relay`
/// inspects, which bounds its work in a large cluster.
const RELAY_BUDGET: usize = 20_000;

/// How many further partitions a move inspects, after the first it may
/// take, for one that keeps primaries spread.
const PRIMARY_LOOKAHEAD: usize = 32;

/// The table of the layout that follows `previous` with `members` (sorted,
/// validated) under `basis`, `count` partitions.
pub(super) fn next_table(
    previous: &Layout,
    members: &[Member],
    basis: &Basis,
    count: u32,
) -> Vec<MemberIndex> {
    let (mut state, short, orphans) = State::keep(previous, members, basis, count);
    state.fill(&short, &orphans);
    // A member stuck in one phase may be helped by the other's moves; a
    // second round is enough in every case measured, and is cheap when
    // there is nothing left to do.
    for _ in 0..2 {
        let took = state.take();
        let gave = state.give();
        if !took && !gave {
            break;
        }
    }
    let budget = (state.moves as f64 * REPAY_SHARE) as usize;
    state.repay(budget);
    state.table
}

/// A member's place in the order of givers or takers: by class, then by
/// `ratio` (negated for givers, so both orders are ascending), then index.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rank {
    class: u8,
    ratio: f64,
    member: u16,
}

impl Eq for Rank {}

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> Ordering {
        self.class
            .cmp(&other.class)
            .then(self.ratio.total_cmp(&other.ratio))
            .then(self.member.cmp(&other.member))
    }
}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The two lists of `State::held`.
const KEPT: usize = 0;
const FRESH: usize = 1;

/// Giver classes.
const OVER_HIGH: u8 = 0;
const OVER_LOW: u8 = 1;
/// Taker classes.
const UNDER_LOW: u8 = 0;
const UNDER_HIGH: u8 = 1;
const UNDER_CAP: u8 = 2;

struct State<'a> {
    width: usize,
    /// `count x width`, each row primary first; [`HOLE`] until filled.
    table: Vec<MemberIndex>,
    /// The partitions each member holds: `held[m][KEPT]` as in the previous
    /// table, `held[m][FRESH]` given it in this change (filled or moved;
    /// moving one again costs no further copy). In no particular order.
    held: Vec<[Vec<u32>; 2]>,
    /// Where the next search of a giver's list for a taker starts: at the
    /// last partition found, so that the list is not searched again past
    /// the partitions that failed for that taker (which stay failures: a
    /// taker only grows while it takes).
    cursors: RefCell<HashMap<(u16, u16, u8), usize>>,
    loads: Vec<u32>,
    primaries: Vec<u32>,
    low: Vec<u32>,
    high: Vec<u32>,
    fair: &'a [f64],
    caps: &'a [u32],
    zones: &'a ZoneRule,
    givers: BTreeSet<Rank>,
    takers: BTreeSet<Rank>,
    /// Replicas placed on a new member so far.
    moves: usize,
    /// (giver, taker) pairs found without a movable partition in the
    /// current step: not inspected again in it (a member's partitions can
    /// be many, and a pair that fails once nearly always fails again).
    dead: RefCell<HashSet<(u16, u16)>>,
    /// The same for one list of a giver: its length when it last held
    /// nothing for the taker (searched again only once it changed).
    exhausted: RefCell<HashMap<(u16, u16, u8), usize>>,
}

impl<'a> State<'a> {
    /// Steps 1 and 2: the previous table less what may not stay, and the
    /// bands. Also returns the rows that lost replicas and those that lost
    /// their primary.
    fn keep(
        previous: &Layout,
        members: &[Member],
        basis: &'a Basis,
        count: u32,
    ) -> (Self, Vec<u32>, Vec<u32>) {
        let zones = &basis.zones;
        let width = zones.width;
        let fair = &basis.fair;
        let members_now = members.len();
        // Where each previous member is now.
        let now: Vec<Option<MemberIndex>> = previous
            .members()
            .iter()
            .map(|m| {
                members
                    .binary_search_by(|n| n.id.as_str().cmp(&m.id))
                    .ok()
                    .map(|i| MemberIndex(i as u16))
            })
            .collect();
        let before = previous.placement();
        let mut low = vec![0u32; members_now];
        let mut high = vec![0u32; members_now];
        for (i, m) in members.iter().enumerate() {
            let share = fair[i];
            let cap = basis.caps[i];
            // `None` for a member that is unchanged (same zone and
            // capacity), else the ratio its load is scaled by.
            let scaled = match previous.member_index(&m.id) {
                Some(j) if previous.member(j).zone != m.zone => Some(1.0),
                Some(j) if previous.member(j).capacity == m.capacity => None,
                Some(j) if before.fair[j.at()] > 0.0 => {
                    Some(f64::from(before.loads[j.at()]) / before.fair[j.at()])
                }
                _ => Some(1.0),
            };
            let (lo, hi) = match scaled {
                None => (0.0, f64::from(cap)),
                Some(ratio) => (
                    (share * ratio.clamp(LOW_FLOOR, 1.0) + 1e-9).floor(),
                    (share * ratio.max(1.0) - 1e-9).ceil(),
                ),
            };
            low[i] = lo.max(0.0) as u32;
            high[i] = (hi.max(0.0) as u32).min(cap).max(low[i]);
        }

        let prev_width = before.width;
        let mut loads = vec![0u32; members_now];
        for m in &before.table {
            if let Some(n) = now[m.at()] {
                loads[n.at()] += 1;
            }
        }
        let mut table = Vec::with_capacity(count as usize * width);
        let mut row: Vec<MemberIndex> = Vec::with_capacity(prev_width);
        let mut orphans = Vec::new();
        let mut short = Vec::new();
        // A row that only lost members can always be completed under the
        // rule it was made under; only a changed rule needs `repair`.
        let same_rule = prev_width == width
            && zone_bounds(
                &ZoneRule::new(previous.members(), usize::from(previous.replication_factor)),
                previous.members(),
            ) == zone_bounds(zones, members)
            && previous.members().iter().zip(&now).all(|(m, n)| match n {
                Some(n) => members[n.at()].zone == m.zone,
                None => true,
            });
        for old in before.table.chunks(prev_width) {
            let p = (table.len() / width) as u32;
            let start = table.len();
            if same_rule {
                table.extend(old.iter().filter_map(|m| now[m.at()]));
            } else {
                row.clear();
                row.extend(old.iter().filter_map(|m| now[m.at()]));
                repair(&mut row, zones, fair, &mut loads);
                table.extend_from_slice(&row);
            }
            let primary = old.first().and_then(|m| now[m.at()]);
            if primary.is_none() || table.get(start).copied() != primary {
                orphans.push(p);
            }
            if table.len() - start < width {
                short.push(p);
                table.resize(start + width, HOLE);
            }
        }

        let mut held: Vec<[Vec<u32>; 2]> = loads
            .iter()
            .map(|&l| [Vec::with_capacity(l as usize), Vec::new()])
            .collect();
        let mut primaries = vec![0u32; members_now];
        for (p, row) in table.chunks(width).enumerate() {
            for (slot, m) in row.iter().enumerate() {
                if *m != HOLE {
                    held[m.at()][KEPT].push(p as u32);
                    if slot == 0 {
                        primaries[m.at()] += 1;
                    }
                }
            }
        }
        let mut state = State {
            width,
            table,
            held,
            cursors: RefCell::new(HashMap::new()),
            loads,
            primaries,
            low,
            high,
            fair,
            caps: &basis.caps,
            zones,
            givers: BTreeSet::new(),
            takers: BTreeSet::new(),
            moves: 0,
            dead: RefCell::new(HashSet::new()),
            exhausted: RefCell::new(HashMap::new()),
        };
        for m in 0..members_now {
            state.rank(m);
        }
        (state, short, orphans)
    }

    fn share(&self, m: usize) -> f64 {
        self.fair[m].max(f64::MIN_POSITIVE)
    }

    fn giver_rank(&self, m: usize) -> Rank {
        let load = self.loads[m];
        let class = if load > self.high[m] {
            OVER_HIGH
        } else if load > self.low[m] {
            OVER_LOW
        } else {
            2
        };
        Rank {
            class,
            ratio: -(f64::from(load) / self.share(m)),
            member: m as u16,
        }
    }

    fn taker_rank(&self, m: usize) -> Rank {
        let load = self.loads[m];
        let class = if load < self.low[m] {
            UNDER_LOW
        } else if load < self.high[m] {
            UNDER_HIGH
        } else if load < self.caps[m] {
            UNDER_CAP
        } else {
            3
        };
        Rank {
            class,
            ratio: f64::from(load + 1) / self.share(m),
            member: m as u16,
        }
    }

    fn rank(&mut self, m: usize) {
        self.givers.insert(self.giver_rank(m));
        self.takers.insert(self.taker_rank(m));
    }

    fn unrank(&mut self, m: usize) {
        self.givers.remove(&self.giver_rank(m));
        self.takers.remove(&self.taker_rank(m));
    }

    fn row(&self, partition: u32) -> &[MemberIndex] {
        let start = partition as usize * self.width;
        &self.table[start..start + self.width]
    }

    /// Step 3: every empty slot (they follow the kept replicas) takes the
    /// first taker the row may take. Slots the zone rule reserves for
    /// zones under their fewest go first, so that a zone whose share grew
    /// finds the slots it may take still open. Then every row that lost its
    /// primary takes as primary the replica with the fewest primaries for
    /// its load.
    fn fill(&mut self, short: &[u32], orphans: &[u32]) {
        for reserved_only in [true, false] {
            for &p in short {
                let start = p as usize * self.width;
                for slot in 0..self.width {
                    if self.table[start + slot] != HOLE {
                        continue;
                    }
                    let present = &self.table[start..start + slot];
                    if reserved_only && self.zones.owed(present) < self.width - slot {
                        break;
                    }
                    self.fill_slot(p, slot);
                }
            }
        }
        for &p in orphans {
            self.choose_primary(p);
        }
    }

    fn fill_slot(&mut self, p: u32, slot: usize) {
        let start = p as usize * self.width;
        let present = &self.table[start..start + slot];
        let allowed = |m: MemberIndex| !present.contains(&m);
        let chosen = self
            .takers
            .iter()
            .map(|r| MemberIndex(r.member))
            .find(|&m| allowed(m) && self.zones.allows(present, m))
            // Unreachable while the rows kept are completable (`repair`);
            // a slot is never left empty.
            .or_else(|| {
                self.takers
                    .iter()
                    .map(|r| MemberIndex(r.member))
                    .find(|&m| allowed(m))
            });
        let Some(m) = chosen else { return };
        self.unrank(m.at());
        self.table[start + slot] = m;
        self.moves += 1;
        self.loads[m.at()] += 1;
        self.held[m.at()][FRESH].push(p);
        if slot == 0 {
            self.primaries[m.at()] += 1;
        }
        self.rank(m.at());
    }

    /// How many primaries a member holds over `load / width`.
    fn primary_excess(&self, m: usize) -> f64 {
        f64::from(self.primaries[m]) - f64::from(self.loads[m]) / self.width as f64
    }

    /// Makes the replica of a row with the fewest primaries for its load
    /// the primary (the others keep their order).
    fn choose_primary(&mut self, p: u32) {
        let start = p as usize * self.width;
        let current = self.table[start];
        if current == HOLE {
            return;
        }
        self.primaries[current.at()] -= 1;
        let row = &self.table[start..start + self.width];
        let best = (0..row.len())
            .filter(|&i| row[i] != HOLE)
            .min_by(|&a, &b| {
                self.primary_excess(row[a].at())
                    .total_cmp(&self.primary_excess(row[b].at()))
                    .then(a.cmp(&b))
            })
            .unwrap_or(0);
        self.table[start..=start + best].rotate_right(1);
        let chosen = self.table[start];
        self.primaries[chosen.at()] += 1;
    }

    /// Step 4: members under `low` take from the members that have most to
    /// spare. Whether any move was made.
    fn take(&mut self) -> bool {
        self.dead.borrow_mut().clear();
        self.exhausted.borrow_mut().clear();
        let mut stuck = vec![false; self.loads.len()];
        let mut moved = false;
        loop {
            let Some(taker) = self
                .takers
                .iter()
                .take_while(|r| r.class == UNDER_LOW)
                .map(|r| usize::from(r.member))
                .find(|&m| !stuck[m])
            else {
                return moved;
            };
            let found = self
                .givers
                .iter()
                .take_while(|r| r.class <= OVER_LOW)
                .map(|r| usize::from(r.member))
                .filter(|&giver| giver != taker)
                .find_map(|giver| self.live_move(giver, taker).map(|at| (giver, at)));
            match found {
                Some((giver, at)) => {
                    self.shift(giver, at, taker);
                    moved = true;
                }
                None => stuck[taker] = true,
            }
        }
    }

    /// Step 5: members over `high` give to the members that most need
    /// replicas. Whether any move was made.
    fn give(&mut self) -> bool {
        self.dead.borrow_mut().clear();
        self.exhausted.borrow_mut().clear();
        let mut stuck = vec![false; self.loads.len()];
        let mut moved = false;
        loop {
            let Some(giver) = self
                .givers
                .iter()
                .take_while(|r| r.class == OVER_HIGH)
                .map(|r| usize::from(r.member))
                .find(|&m| !stuck[m])
            else {
                return moved;
            };
            let deepest = if self.loads[giver] > self.caps[giver] {
                UNDER_CAP
            } else {
                UNDER_HIGH
            };
            let found = self
                .takers
                .iter()
                .take_while(|r| r.class <= deepest)
                .map(|r| usize::from(r.member))
                .filter(|&taker| taker != giver)
                .find_map(|taker| self.live_move(giver, taker).map(|at| (taker, at)));
            match found {
                Some((taker, at)) => {
                    self.shift(giver, at, taker);
                    moved = true;
                }
                None if deepest == UNDER_CAP && self.relay(giver) => moved = true,
                None => stuck[giver] = true,
            }
        }
    }

    /// A member over its cap that no member with room may take a replica
    /// from directly hands one down a chain: to a member that passes one of
    /// its own on, and so on to a member with room (breadth first, so the
    /// shortest chain, each link one move). Whether a chain was found.
    fn relay(&mut self, from: usize) -> bool {
        let order: Vec<usize> = self.takers.iter().map(|r| usize::from(r.member)).collect();
        let mut before = vec![usize::MAX; order.len()];
        before[from] = from;
        let mut queue = VecDeque::from([from]);
        let mut budget = RELAY_BUDGET;
        while let Some(x) = queue.pop_front() {
            for &y in &order {
                if before[y] != usize::MAX {
                    continue;
                }
                if budget == 0 {
                    return false;
                }
                budget -= 1;
                if self.live_move(x, y).is_none() {
                    continue;
                }
                before[y] = x;
                if self.loads[y] >= self.caps[y] {
                    queue.push_back(y);
                    continue;
                }
                // Pass replicas on from the end of the chain back to its
                // start, so no link is ever over its cap.
                let mut link = y;
                while link != from {
                    let giver = before[link];
                    let Some(at) = self.movable(giver, link) else {
                        return false;
                    };
                    self.shift(giver, at, link);
                    link = giver;
                }
                return true;
            }
        }
        false
    }

    /// Step 6: members in debt (under [`LOW_FLOOR`] of their share) take
    /// from the members furthest over theirs, at most `budget` moves, each
    /// one narrowing the gap between the two.
    fn repay(&mut self, budget: usize) {
        self.dead.borrow_mut().clear();
        self.exhausted.borrow_mut().clear();
        let mut stuck = vec![false; self.loads.len()];
        let mut left = budget;
        while left > 0 {
            let in_debt = |m: usize| f64::from(self.loads[m]) < LOW_FLOOR * self.fair[m];
            let Some(taker) = self
                .takers
                .iter()
                .map(|r| usize::from(r.member))
                .filter(|&m| !stuck[m] && in_debt(m))
                .min_by(|&a, &b| self.ratio(a).total_cmp(&self.ratio(b)).then(a.cmp(&b)))
            else {
                return;
            };
            let after = f64::from(self.loads[taker] + 1) / self.share(taker);
            let found = self
                .givers
                .iter()
                .take_while(|r| r.class <= OVER_LOW)
                .map(|r| usize::from(r.member))
                .take_while(|&giver| f64::from(self.loads[giver] - 1) / self.share(giver) > after)
                .filter(|&giver| giver != taker)
                .find_map(|giver| self.live_move(giver, taker).map(|at| (giver, at)));
            match found {
                Some((giver, at)) => {
                    self.shift(giver, at, taker);
                    left -= 1;
                }
                None => stuck[taker] = true,
            }
        }
    }

    fn ratio(&self, m: usize) -> f64 {
        f64::from(self.loads[m]) / self.share(m)
    }

    /// [`State::movable`], skipping and recording pairs that found nothing
    /// earlier in this step.
    fn live_move(&self, giver: usize, taker: usize) -> Option<(usize, usize, usize)> {
        let pair = (giver as u16, taker as u16);
        if self.dead.borrow().contains(&pair) {
            return None;
        }
        let found = self.movable(giver, taker);
        if found.is_none() {
            self.dead.borrow_mut().insert(pair);
        }
        found
    }

    /// A partition `giver` holds that `taker` may take in its place, as
    /// `(list, position in held[giver][list], slot in the row)`: the taker
    /// is not a replica yet and the zone rule still holds after the swap.
    /// Prefers a slot this change already moved, then a partition whose
    /// primary the giver is, or is not, as keeps primaries spread (see the
    /// module docs).
    fn movable(&self, giver: usize, taker: usize) -> Option<(usize, usize, usize)> {
        let zone_of = &self.zones.zone_of;
        let (zg, zt) = (zone_of[giver], zone_of[taker]);
        if zg != zt && self.zones.fixed() {
            return None;
        }
        let taker = MemberIndex(taker as u16);
        // The slot the giver holds in `p`, if the taker may have it.
        let slot_of = |p: u32| {
            let row = self.row(p);
            if row.contains(&taker) {
                return None;
            }
            if zg != zt {
                let count = |z: u16| row.iter().filter(|m| zone_of[m.at()] == z).count();
                if count(zt) + 1 > self.zones.hi[usize::from(zt)]
                    || count(zg) <= self.zones.lo[usize::from(zg)]
                {
                    return None;
                }
            }
            row.iter().position(|m| m.at() == giver)
        };
        let want_primary = self.primary_excess(giver) > self.primary_excess(taker.at());
        let mut cursors = self.cursors.borrow_mut();
        for list in [FRESH, KEPT] {
            let partitions = &self.held[giver][list];
            let key = (giver as u16, taker.0, list as u8);
            let len = partitions.len();
            if self.exhausted.borrow().get(&key) == Some(&len) {
                continue;
            }
            let start = cursors.get(&key).copied().unwrap_or(0).min(len);
            let mut first = None;
            let mut looked = 0;
            for i in (start..len).chain(0..start) {
                if first.is_some() {
                    looked += 1;
                    if looked > PRIMARY_LOOKAHEAD {
                        break;
                    }
                }
                let Some(slot) = slot_of(partitions[i]) else {
                    continue;
                };
                if list == FRESH || self.width == 1 || (slot == 0) == want_primary {
                    cursors.insert(key, i);
                    return Some((list, i, slot));
                }
                if first.is_none() {
                    first = Some((list, i, slot));
                }
            }
            if let Some((_, i, _)) = first {
                cursors.insert(key, i);
                return first;
            }
            self.exhausted.borrow_mut().insert(key, len);
        }
        None
    }

    /// Moves the replica at `held[giver][list][index]` (slot `slot` of its
    /// row) to `taker`.
    fn shift(&mut self, giver: usize, at: (usize, usize, usize), taker: usize) {
        let (list, index, slot) = at;
        self.unrank(giver);
        self.unrank(taker);
        let p = self.held[giver][list].swap_remove(index);
        self.table[p as usize * self.width + slot] = MemberIndex(taker as u16);
        self.held[taker][FRESH].push(p);
        if list == KEPT {
            self.moves += 1;
        }
        self.loads[giver] -= 1;
        self.loads[taker] += 1;
        if slot == 0 {
            self.primaries[giver] -= 1;
            self.primaries[taker] += 1;
        }
        self.rank(giver);
        self.rank(taker);
    }
}

/// Every zone's name with the fewest and most replicas of a partition the
/// rule gives it.
fn zone_bounds<'m>(zones: &ZoneRule, members: &'m [Member]) -> Vec<(&'m str, usize, usize)> {
    let mut bounds: Vec<(&str, usize, usize)> = members
        .iter()
        .zip(&zones.zone_of)
        .map(|(m, &z)| {
            (
                m.zone.as_str(),
                zones.lo[usize::from(z)],
                zones.hi[usize::from(z)],
            )
        })
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    bounds
}

/// Drops from a row of kept replicas what the zone rule no longer allows:
/// a zone over its most gives up its member furthest over its share, then,
/// while the zones under their fewest could not be completed in the slots
/// left (or the row is over `width`), a zone above its fewest does.
fn repair(row: &mut Vec<MemberIndex>, zones: &ZoneRule, fair: &[f64], loads: &mut [u32]) {
    let zone = |m: &MemberIndex| usize::from(zones.zone_of[m.at()]);
    let count = |row: &[MemberIndex], z: usize| row.iter().filter(|m| zone(m) == z).count();
    let drop_worst =
        |row: &mut Vec<MemberIndex>, loads: &mut [u32], eligible: &dyn Fn(usize) -> bool| {
            let worst = row
                .iter()
                .enumerate()
                .filter(|(_, m)| eligible(zone(m)))
                .max_by(|(_, a), (_, b)| {
                    let ra = f64::from(loads[a.at()]) / fair[a.at()].max(f64::MIN_POSITIVE);
                    let rb = f64::from(loads[b.at()]) / fair[b.at()].max(f64::MIN_POSITIVE);
                    ra.total_cmp(&rb).then(a.0.cmp(&b.0))
                })
                .map(|(i, _)| i);
            match worst {
                Some(i) => {
                    let m = row.remove(i);
                    loads[m.at()] -= 1;
                    true
                }
                None => false,
            }
        };
    loop {
        let over = row.iter().map(zone).find(|&z| count(row, z) > zones.hi[z]);
        let Some(z) = over else { break };
        drop_worst(row, loads, &|y| y == z);
    }
    while row.len() + zones.owed(row) > zones.width {
        let snapshot = row.clone();
        if !drop_worst(row, loads, &|z| count(&snapshot, z) > zones.lo[z]) {
            break;
        }
    }
}
