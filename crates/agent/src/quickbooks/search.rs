//! Search over the cached customers, vendors and items: case-insensitive
//! substring matching, ranked, fast enough to run on every keystroke of a
//! till's customer or product box (tens of thousands of entries, well
//! under a millisecond for most queries).
//!
//! # Matching
//! Texts and queries are *folded* the same way: Unicode lowercase, runs of
//! whitespace made one space, and for Arabic (most names in Jordan) the
//! usual search normalisation (as Lucene's Arabic normaliser does): the
//! hamza forms of alef (أ إ آ ٱ) become ا, ى becomes ي, ة becomes ه,
//! tatweel and the short-vowel marks are dropped; Arabic-Indic digits
//! become ASCII digits. So "احمد" finds "أحمد" and "AHMAD" finds "Ahmad".
//! A query matches an entry when one of the index's fields contains it.
//!
//! # Ranking
//! 1. a field *starts* with the query (whole-field prefix),
//! 2. a word inside a field starts with it (the character before the match
//!    is not a letter or digit),
//! 3. any other substring;
//!
//! then, at equal rank, active entries first, shorter names first, then
//! alphabetical (folded name, then Id). `total` counts every match before
//! the limit. An empty (or all-space) query matches nothing: total 0.
//!
//! # How it is fast
//! Entries are sorted once, at build, in the tie-break order, and numbered
//! in that order, so any posting list kept in entry order is already
//! ranked within its class. For each 1- and 2-character gram the index
//! keeps three disjoint posting lists, one per rank class (the gram's best
//! position in the entry); a 1- or 2-character query is answered from them
//! directly (total = the lists' lengths, results = the first `limit`),
//! whatever the number of matches. A longer query takes the rarest of its
//! trigrams' posting lists as candidates and checks each against the
//! folded texts, which also gives its rank.
//!
//! Built indexes are immutable and shared (`Arc`); what the push learns
//! between two builds (a customer it created, a reference QuickBooks
//! refused) goes to a small overlay that searches scan linearly and that
//! the next build absorbs.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::model::opt_amount;
use crate::store::{CacheKind, CacheRow};

/// Results when the caller does not say.
pub(crate) const DEFAULT_LIMIT: usize = 15;
/// Results at most, whatever the caller says.
pub(crate) const MAX_LIMIT: usize = 100;

/// Every index name `search` accepts (`part_names` is `product_names`).
pub(crate) const INDEX_NAMES: [&str; 6] = [
    "client_names",
    "vendor_names",
    "product_names",
    "product_descriptions",
    "part_numbers",
    "part_names",
];

/// Why a search could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message is its doc")]
pub enum SearchError {
    #[error("unknown search index \"{index}\": use one of client_names, vendor_names, product_names, product_descriptions, part_numbers or part_names")]
    UnknownIndex { index: String },
}

/// One entry found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct SearchHit {
    /// The QuickBooks Id.
    pub id: String,
    /// DisplayName (customers, vendors) or Name (items).
    pub name: String,
    /// "Customer", "Vendor", or the item's QuickBooks Type ("Service",
    /// "Inventory", "NonInventory"...).
    #[serde(rename = "type")]
    pub kind: String,
    pub active: bool,
    pub(crate) sku: Option<String>,
    /// A JSON number, as QuickBooks writes it (held as a decimal).
    #[serde(with = "opt_amount")]
    pub unit_price: Option<Decimal>,
    pub(crate) email: Option<String>,
    pub(crate) company_name: Option<String>,
    pub(crate) description: Option<String>,
    /// The field that matched best: "name", "company_name", "email",
    /// "sku" or "description".
    pub matched: &'static str,
    /// How: "prefix" (the field starts with the query), "word_prefix" or
    /// "substring".
    pub rank: &'static str,
}

/// The answer of a search: `{"query", "results", "total"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct SearchAnswer {
    pub(crate) query: String,
    pub results: Vec<SearchHit>,
    /// Matches before the limit.
    pub total: usize,
}

/// One index, for the status page.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct IndexStatus {
    pub name: &'static str,
    /// Set for `part_names`: the index it is another name for.
    pub alias_of: Option<&'static str>,
    /// "customers", "vendors" or "items".
    pub(crate) entity: &'static str,
    pub(crate) fields: Vec<&'static str>,
    /// Entries searchable now (the built index plus what was learnt since).
    pub entries: usize,
    /// Changes learnt since the build, searched from the overlay until the
    /// next build.
    pub pending: usize,
    /// Distinct 1-, 2- and 3-character grams.
    pub(crate) grams: usize,
    /// Rough memory of the postings, in bytes.
    pub approx_bytes: usize,
    pub(crate) built_at: String,
    pub build_ms: u64,
}

// ------------------------------------------------------------- folding

/// The search form of a text (see the module's doc).
pub(crate) fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.to_lowercase().chars() {
        let c = match c {
            // Tatweel and the harakat (fathatan .. sukun, and the small
            // marks after them), and the superscript alef.
            '\u{0640}' | '\u{064B}'..='\u{065F}' | '\u{0670}' => continue,
            '\u{0622}' | '\u{0623}' | '\u{0625}' | '\u{0671}' => '\u{0627}',
            '\u{0649}' => '\u{064A}',
            '\u{0629}' => '\u{0647}',
            '\u{0660}'..='\u{0669}' => char::from(b'0' + (c as u32 - 0x0660) as u8),
            '\u{06F0}'..='\u{06F9}' => char::from(b'0' + (c as u32 - 0x06F0) as u8),
            c if c.is_whitespace() => {
                space = !out.is_empty();
                continue;
            }
            c if c.is_control() => continue,
            c => c,
        };
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

/// The key of an exact name lookup (the push's "DisplayName = ..."):
/// QuickBooks compares names case-insensitively, but "أحمد" and "احمد" are
/// two names, so no folding beyond case and spaces.
pub(crate) fn exact_key(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

// ------------------------------------------------------------- records

/// The searchable fields of an entry, by slot: parties (name, company,
/// email), items (name, sku, description).
const PARTY_FIELDS: [&str; 3] = ["name", "company_name", "email"];
const ITEM_FIELDS: [&str; 3] = ["name", "sku", "description"];

/// One searchable entity.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) kind: CacheKind,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) company_name: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) sku: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) item_type: Option<String>,
    pub(crate) unit_price: Option<Decimal>,
    pub(crate) active: bool,
    folded: [Box<str>; 3],
    name_chars: u32,
    id_num: u64,
}

impl Record {
    pub(crate) fn from_row(row: CacheRow) -> Record {
        let name = row
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .or_else(|| row.company_name.clone())
            .unwrap_or_default();
        let texts: [Option<&str>; 3] = match row.kind {
            CacheKind::Item => [Some(&name), row.sku.as_deref(), row.description.as_deref()],
            _ => [
                Some(&name),
                row.company_name.as_deref(),
                row.email.as_deref(),
            ],
        };
        let folded = texts.map(|t| fold(t.unwrap_or_default()).into_boxed_str());
        Record {
            kind: row.kind,
            id_num: row.id.parse().unwrap_or(u64::MAX),
            name_chars: folded[0].chars().count() as u32,
            id: row.id,
            name,
            company_name: row.company_name,
            email: row.email,
            sku: row.sku,
            description: row.description,
            item_type: row.item_type,
            unit_price: row.unit_price,
            active: row.active,
            folded,
        }
    }

    /// The tie-break order: active first, shorter names, alphabetical, Id.
    fn order(&self, other: &Record) -> std::cmp::Ordering {
        (
            !self.active,
            self.name_chars,
            &self.folded[0],
            self.id_num,
            &self.id,
        )
            .cmp(&(
                !other.active,
                other.name_chars,
                &other.folded[0],
                other.id_num,
                &other.id,
            ))
    }

    fn hit(&self, class: u8, slot: u8) -> SearchHit {
        let fields = if self.kind == CacheKind::Item {
            &ITEM_FIELDS
        } else {
            &PARTY_FIELDS
        };
        SearchHit {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: match self.kind {
                CacheKind::Customer => "Customer".into(),
                CacheKind::Vendor => "Vendor".into(),
                _ => self.item_type.clone().unwrap_or_else(|| "Item".into()),
            },
            active: self.active,
            sku: self.sku.clone(),
            unit_price: self.unit_price,
            email: self.email.clone(),
            company_name: self.company_name.clone(),
            description: self.description.clone(),
            matched: fields[slot as usize],
            rank: ["prefix", "word_prefix", "substring"][class as usize],
        }
    }
}

/// The best rank class of `q` in `text`: 0 prefix, 1 word prefix, 2 other.
fn match_class(text: &str, q: &str) -> Option<u8> {
    let mut best = None;
    let mut from = 0;
    while let Some(i) = text[from..].find(q) {
        let at = from + i;
        if at == 0 {
            return Some(0);
        }
        let before = text[..at].chars().next_back().unwrap_or(' ');
        if !before.is_alphanumeric() {
            best = Some(1);
        } else if best.is_none() {
            best = Some(2);
        }
        // Overlapping occurrences count too: step one character.
        from = at + text[at..].chars().next().map_or(1, char::len_utf8);
    }
    best
}

// ------------------------------------------------------------- indexes

/// A fast hasher for gram keys (packed characters): a full 64-bit mix,
/// because the table picks buckets with the low bits.
#[derive(Default)]
struct GramHasher(u64);

impl Hasher for GramHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(self.0 ^ u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let mut x = n ^ self.0.rotate_left(17);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        self.0 = x;
    }
}

type GramMap<V> = HashMap<u64, V, BuildHasherDefault<GramHasher>>;

fn pack(chars: &[char]) -> u64 {
    chars
        .iter()
        .enumerate()
        .fold(0u64, |k, (i, c)| k | (u64::from(*c as u32) << (21 * i)))
}

/// Postings of a 1- or 2-character gram, by rank class. A posting is
/// `entry << 2 | slot` (the slot where the gram ranks best).
#[derive(Default)]
struct Classed([Vec<u32>; 3]);

/// The indexes' names and what they cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IndexId {
    ClientNames,
    VendorNames,
    ProductNames,
    ProductDescriptions,
    PartNumbers,
}

impl IndexId {
    const ALL: [IndexId; 5] = [
        IndexId::ClientNames,
        IndexId::VendorNames,
        IndexId::ProductNames,
        IndexId::ProductDescriptions,
        IndexId::PartNumbers,
    ];

    fn parse(name: &str) -> Option<IndexId> {
        Some(match name {
            "client_names" => IndexId::ClientNames,
            "vendor_names" => IndexId::VendorNames,
            "product_names" | "part_names" => IndexId::ProductNames,
            "product_descriptions" => IndexId::ProductDescriptions,
            "part_numbers" => IndexId::PartNumbers,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            IndexId::ClientNames => "client_names",
            IndexId::VendorNames => "vendor_names",
            IndexId::ProductNames => "product_names",
            IndexId::ProductDescriptions => "product_descriptions",
            IndexId::PartNumbers => "part_numbers",
        }
    }

    fn kind(self) -> CacheKind {
        match self {
            IndexId::ClientNames => CacheKind::Customer,
            IndexId::VendorNames => CacheKind::Vendor,
            _ => CacheKind::Item,
        }
    }

    /// The record slots searched.
    fn slots(self) -> &'static [u8] {
        match self {
            IndexId::ClientNames | IndexId::VendorNames => &[0, 1, 2],
            IndexId::ProductNames => &[0, 1],
            IndexId::ProductDescriptions => &[2],
            IndexId::PartNumbers => &[1],
        }
    }
}

/// The n-gram postings of one index over a kind's entries.
struct FieldIndex {
    id: IndexId,
    uni: GramMap<Classed>,
    bi: GramMap<Classed>,
    tri: GramMap<Vec<u32>>,
}

impl FieldIndex {
    fn build(id: IndexId, records: &[Record]) -> FieldIndex {
        let mut idx = FieldIndex {
            id,
            uni: GramMap::default(),
            bi: GramMap::default(),
            tri: GramMap::default(),
        };
        // (gram length, key, class, slot) of one entry; sorted, the first
        // of each gram is its best class (and the earliest slot).
        let mut grams: Vec<(u8, u64, u8, u8)> = Vec::new();
        let mut chars: Vec<char> = Vec::new();
        for (pos, rec) in records.iter().enumerate() {
            grams.clear();
            for &slot in id.slots() {
                chars.clear();
                chars.extend(rec.folded[slot as usize].chars());
                for i in 0..chars.len() {
                    let class = if i == 0 {
                        0
                    } else if !chars[i - 1].is_alphanumeric() {
                        1
                    } else {
                        2
                    };
                    for n in 1..=3usize {
                        if i + n <= chars.len() {
                            grams.push((n as u8, pack(&chars[i..i + n]), class, slot));
                        }
                    }
                }
            }
            grams.sort_unstable();
            grams.dedup_by_key(|g| (g.0, g.1));
            let pos = pos as u32;
            for &(n, key, class, slot) in &grams {
                let posting = pos << 2 | u32::from(slot);
                match n {
                    1 => idx.uni.entry(key).or_default().0[class as usize].push(posting),
                    2 => idx.bi.entry(key).or_default().0[class as usize].push(posting),
                    _ => idx.tri.entry(key).or_default().push(pos),
                }
            }
        }
        for c in idx.uni.values_mut().chain(idx.bi.values_mut()) {
            c.0.iter_mut().for_each(Vec::shrink_to_fit);
        }
        idx.tri.values_mut().for_each(Vec::shrink_to_fit);
        idx.uni.shrink_to_fit();
        idx.bi.shrink_to_fit();
        idx.tri.shrink_to_fit();
        idx
    }

    fn grams(&self) -> usize {
        self.uni.len() + self.bi.len() + self.tri.len()
    }

    fn approx_bytes(&self) -> usize {
        let classed = |m: &GramMap<Classed>| {
            m.values()
                .map(|c| c.0.iter().map(|l| l.capacity() * 4 + 24).sum::<usize>())
                .sum::<usize>()
                + m.capacity() * 9
        };
        classed(&self.uni)
            + classed(&self.bi)
            + self
                .tri
                .values()
                .map(|l| l.capacity() * 4 + 24)
                .sum::<usize>()
            + self.tri.capacity() * 9
    }

    /// The best (class, slot) of `q` in `rec`'s fields.
    fn check(&self, rec: &Record, q: &str) -> Option<(u8, u8)> {
        let mut best: Option<(u8, u8)> = None;
        for &slot in self.id.slots() {
            if let Some(class) = match_class(&rec.folded[slot as usize], q) {
                if best.is_none_or(|(b, _)| class < b) {
                    best = Some((class, slot));
                    if class == 0 {
                        break;
                    }
                }
            }
        }
        best
    }
}

/// A kind's entries as built: sorted, numbered, indexed.
pub(crate) struct Base {
    kind: CacheKind,
    records: Vec<Record>,
    by_id: HashMap<String, u32>,
    by_name: HashMap<String, u32>,
    by_sku: HashMap<String, u32>,
    indexes: Vec<FieldIndex>,
    built_at: DateTime<Utc>,
    build_ms: u64,
}

impl Base {
    /// Builds a kind's indexes from its cached rows (CPU-bound: run it off
    /// the async workers).
    pub(crate) fn build(kind: CacheKind, rows: Vec<CacheRow>, now: DateTime<Utc>) -> Base {
        let started = Instant::now();
        let mut records: Vec<Record> = rows.into_iter().map(Record::from_row).collect();
        records.sort_by(Record::order);
        let mut by_id = HashMap::with_capacity(records.len());
        let mut by_name = HashMap::with_capacity(records.len());
        let mut by_sku = HashMap::new();
        for (pos, r) in records.iter().enumerate() {
            let pos = pos as u32;
            by_id.insert(r.id.clone(), pos);
            // The first in order wins: an active one before an inactive one.
            by_name.entry(exact_key(&r.name)).or_insert(pos);
            if let Some(sku) = r.sku.as_deref().filter(|s| !s.trim().is_empty()) {
                by_sku.entry(exact_key(sku)).or_insert(pos);
            }
        }
        let indexes = IndexId::ALL
            .into_iter()
            .filter(|i| i.kind() == kind)
            .map(|i| FieldIndex::build(i, &records))
            .collect();
        Base {
            kind,
            records,
            by_id,
            by_name,
            by_sku,
            indexes,
            built_at: now,
            build_ms: started.elapsed().as_millis() as u64,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }
}

/// What was learnt since the base was built, each change with the
/// sequence number it was made under (a rebuild keeps the changes its
/// database read may have missed).
#[derive(Clone, Default)]
pub(crate) struct Overlay {
    upserts: BTreeMap<String, (u64, Arc<Record>)>,
    removed: HashMap<String, u64>,
}

impl Overlay {
    fn len(&self) -> usize {
        self.upserts.len() + self.removed.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The changes made after `seq`.
    fn after(&self, seq: u64) -> Overlay {
        Overlay {
            upserts: self
                .upserts
                .iter()
                .filter(|(_, (s, _))| *s > seq)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            removed: self
                .removed
                .iter()
                .filter(|(_, s)| **s > seq)
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct KindIndex {
    base: Arc<Base>,
    overlay: Arc<Overlay>,
    /// The base's entries the overlay hides, as a bitset by position (a
    /// search checks it for every candidate: no string hashing there).
    hidden: Arc<Vec<u64>>,
}

impl KindIndex {
    fn new(base: Arc<Base>, overlay: Arc<Overlay>) -> KindIndex {
        let mut hidden = Vec::new();
        if !overlay.is_empty() {
            hidden = vec![0u64; base.len().div_ceil(64)];
            for id in overlay.removed.keys().chain(overlay.upserts.keys()) {
                if let Some(&p) = base.by_id.get(id) {
                    hidden[p as usize / 64] |= 1 << (p % 64);
                }
            }
        }
        KindIndex {
            base,
            overlay,
            hidden: Arc::new(hidden),
        }
    }

    fn hides(&self, pos: u32) -> bool {
        self.hidden
            .get(pos as usize / 64)
            .is_some_and(|w| w & (1 << (pos % 64)) != 0)
    }
}

/// An entity found by exact name or SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) id: String,
    pub(crate) active: bool,
}

/// Every index at one moment: swapped whole, read without locks held.
#[derive(Clone)]
pub(crate) struct Snapshot {
    kinds: [KindIndex; 3],
}

fn slot_of(kind: CacheKind) -> Option<usize> {
    match kind {
        CacheKind::Customer => Some(0),
        CacheKind::Vendor => Some(1),
        CacheKind::Item => Some(2),
        CacheKind::Invoice => None,
    }
}

/// The kinds that have search indexes.
pub(crate) const INDEXED: [CacheKind; 3] =
    [CacheKind::Customer, CacheKind::Vendor, CacheKind::Item];

impl Snapshot {
    pub(crate) fn empty(now: DateTime<Utc>) -> Snapshot {
        Snapshot {
            kinds: INDEXED
                .map(|k| KindIndex::new(Arc::new(Base::build(k, Vec::new(), now)), Arc::default())),
        }
    }

    /// With `base` for its kind; changes learnt after `seq` (when its rows
    /// were read) are kept on top of it.
    pub(crate) fn with_base(&self, base: Base, seq: u64) -> Snapshot {
        let mut s = self.clone();
        if let Some(i) = slot_of(base.kind) {
            let overlay = s.kinds[i].overlay.after(seq);
            s.kinds[i] = KindIndex::new(Arc::new(base), Arc::new(overlay));
        }
        s
    }

    /// With `row` learnt (created or read by the push) under `seq`.
    pub(crate) fn with_upsert(&self, row: CacheRow, seq: u64) -> Snapshot {
        let mut s = self.clone();
        if let Some(i) = slot_of(row.kind) {
            let mut o = (*s.kinds[i].overlay).clone();
            o.removed.remove(&row.id);
            o.upserts
                .insert(row.id.clone(), (seq, Arc::new(Record::from_row(row))));
            s.kinds[i] = KindIndex::new(s.kinds[i].base.clone(), Arc::new(o));
        }
        s
    }

    /// With a change set of `kind` learnt under `seq` (one overlay copy for
    /// all of it).
    pub(crate) fn with_changes(
        &self,
        kind: CacheKind,
        upserts: Vec<CacheRow>,
        removals: Vec<String>,
        seq: u64,
    ) -> Snapshot {
        let mut s = self.clone();
        if let Some(i) = slot_of(kind) {
            let mut o = (*s.kinds[i].overlay).clone();
            for row in upserts.into_iter().filter(|r| r.kind == kind) {
                o.removed.remove(&row.id);
                o.upserts
                    .insert(row.id.clone(), (seq, Arc::new(Record::from_row(row))));
            }
            for id in removals {
                o.upserts.remove(&id);
                o.removed.insert(id, seq);
            }
            s.kinds[i] = KindIndex::new(s.kinds[i].base.clone(), Arc::new(o));
        }
        s
    }

    /// Without entity `id` of `kind` (QuickBooks refused it), under `seq`.
    pub(crate) fn with_removal(&self, kind: CacheKind, id: &str, seq: u64) -> Snapshot {
        let mut s = self.clone();
        if let Some(i) = slot_of(kind) {
            let mut o = (*s.kinds[i].overlay).clone();
            o.upserts.remove(id);
            o.removed.insert(id.to_string(), seq);
            s.kinds[i] = KindIndex::new(s.kinds[i].base.clone(), Arc::new(o));
        }
        s
    }

    /// Changes waiting in `kind`'s overlay.
    pub(crate) fn pending(&self, kind: CacheKind) -> usize {
        slot_of(kind).map_or(0, |i| self.kinds[i].overlay.len())
    }

    /// Entries searchable for `kind`.
    pub(crate) fn entries(&self, kind: CacheKind) -> usize {
        let Some(i) = slot_of(kind) else { return 0 };
        let k = &self.kinds[i];
        let hidden = k
            .overlay
            .removed
            .keys()
            .chain(k.overlay.upserts.keys())
            .filter(|id| k.base.by_id.contains_key(*id))
            .count();
        k.base.len() - hidden + k.overlay.upserts.len()
    }

    /// An entity of `kind` whose name is `name` (case-insensitive), the
    /// active one if there are several.
    pub(crate) fn find_by_name(&self, kind: CacheKind, name: &str) -> Option<Found> {
        self.find(kind, &exact_key(name), |r| Some(&r.name), |b| &b.by_name)
    }

    /// An item whose SKU is `sku` (case-insensitive).
    pub(crate) fn find_by_sku(&self, sku: &str) -> Option<Found> {
        self.find(
            CacheKind::Item,
            &exact_key(sku),
            |r| r.sku.as_ref(),
            |b| &b.by_sku,
        )
    }

    fn find(
        &self,
        kind: CacheKind,
        key: &str,
        field: impl Fn(&Record) -> Option<&String>,
        map: impl Fn(&Base) -> &HashMap<String, u32>,
    ) -> Option<Found> {
        let k = &self.kinds[slot_of(kind)?];
        let found = |r: &Record| Found {
            id: r.id.clone(),
            active: r.active,
        };
        // The overlay is newer than the base.
        let mut fresh: Option<&Record> = None;
        for (_, r) in k.overlay.upserts.values() {
            if field(r).is_some_and(|v| exact_key(v) == key)
                && fresh.is_none_or(|f| !f.active && r.active)
            {
                fresh = Some(r);
            }
        }
        if let Some(r) = fresh.filter(|r| r.active) {
            return Some(found(r));
        }
        let base = map(&k.base)
            .get(key)
            .filter(|p| !k.hides(**p))
            .map(|p| &k.base.records[*p as usize]);
        match (base, fresh) {
            (Some(b), _) if b.active => Some(found(b)),
            (_, Some(f)) => Some(found(f)),
            (b, None) => b.map(found),
        }
    }

    /// Searches `index` for `q` (see the module's doc).
    pub(crate) fn search(
        &self,
        index: &str,
        q: &str,
        limit: Option<usize>,
    ) -> Result<SearchAnswer, SearchError> {
        let id = IndexId::parse(index).ok_or_else(|| SearchError::UnknownIndex {
            index: index.to_string(),
        })?;
        let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let folded = fold(q);
        let mut answer = SearchAnswer {
            query: q.to_string(),
            results: Vec::new(),
            total: 0,
        };
        if folded.is_empty() {
            return Ok(answer);
        }
        let k = &self.kinds[slot_of(id.kind()).expect("indexes are of indexed kinds")];
        let idx = k
            .base
            .indexes
            .iter()
            .find(|i| i.id == id)
            .expect("every index of the kind is built");
        let (hits, total) = search_kind(k, idx, &folded, limit);
        answer.total = total;
        answer.results = hits.iter().map(|(r, c, s)| r.hit(*c, *s)).collect();
        Ok(answer)
    }

    pub(crate) fn status(&self) -> Vec<IndexStatus> {
        INDEX_NAMES
            .iter()
            .map(|name| {
                let id = IndexId::parse(name).expect("listed names parse");
                let kind = id.kind();
                let k = &self.kinds[slot_of(kind).expect("indexed")];
                let idx = k.base.indexes.iter().find(|i| i.id == id).expect("built");
                let fields = if kind == CacheKind::Item {
                    &ITEM_FIELDS
                } else {
                    &PARTY_FIELDS
                };
                IndexStatus {
                    name,
                    alias_of: (*name != id.name()).then(|| id.name()),
                    entity: kind.plural(),
                    fields: id.slots().iter().map(|s| fields[*s as usize]).collect(),
                    entries: self.entries(kind),
                    pending: k.overlay.len(),
                    grams: idx.grams(),
                    approx_bytes: idx.approx_bytes(),
                    built_at: k.base.built_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                    build_ms: k.base.build_ms,
                }
            })
            .collect()
    }
}

/// The ranked matches of `q` (folded, not empty): up to `limit` of them as
/// (record, class, slot), and how many there are.
fn search_kind<'a>(
    k: &'a KindIndex,
    idx: &FieldIndex,
    q: &str,
    limit: usize,
) -> (Vec<(&'a Record, u8, u8)>, usize) {
    let base = &k.base;
    let overlay = &k.overlay;
    let chars: Vec<char> = q.chars().collect();
    let mut total = 0usize;
    let mut picked: Vec<(&Record, u8, u8)> = Vec::new();
    if chars.len() <= 2 {
        let classed = if chars.len() == 1 {
            idx.uni.get(&pack(&chars))
        } else {
            idx.bi.get(&pack(&chars))
        };
        if let Some(classed) = classed {
            for (class, list) in classed.0.iter().enumerate() {
                total += list.len();
                for &posting in list {
                    if picked.len() >= limit {
                        break;
                    }
                    let pos = posting >> 2;
                    if !k.hides(pos) {
                        picked.push((
                            &base.records[pos as usize],
                            class as u8,
                            (posting & 3) as u8,
                        ));
                    }
                }
            }
            // The lists' lengths counted entries the overlay hides.
            if !overlay.is_empty() {
                let hidden = overlay
                    .removed
                    .keys()
                    .chain(overlay.upserts.keys())
                    .filter_map(|id| base.by_id.get(id))
                    .filter(|p| idx.check(&base.records[**p as usize], q).is_some())
                    .count();
                total -= hidden;
            }
        }
    } else {
        // Candidates: the rarest trigram's entries; none if one is absent.
        let mut rarest: Option<&Vec<u32>> = None;
        for w in chars.windows(3) {
            match idx.tri.get(&pack(w)) {
                None => {
                    rarest = None;
                    break;
                }
                Some(l) if rarest.is_none_or(|r| l.len() < r.len()) => rarest = Some(l),
                Some(_) => {}
            }
        }
        let mut classes: [Vec<(&Record, u8, u8)>; 3] = Default::default();
        for &pos in rarest.map(Vec::as_slice).unwrap_or_default() {
            if k.hides(pos) {
                continue;
            }
            let rec = &base.records[pos as usize];
            if let Some((class, slot)) = idx.check(rec, q) {
                total += 1;
                let bucket = &mut classes[class as usize];
                if bucket.len() < limit {
                    bucket.push((rec, class, slot));
                }
            }
        }
        picked = classes.into_iter().flatten().take(limit).collect();
    }
    let before = picked.len();
    for (_, rec) in overlay.upserts.values() {
        if let Some((class, slot)) = idx.check(rec, q) {
            total += 1;
            picked.push((rec, class, slot));
        }
    }
    if picked.len() > before {
        picked.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.order(b.0)));
    }
    picked.truncate(limit);
    (picked, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party(kind: CacheKind, id: &str, name: &str, active: bool) -> CacheRow {
        CacheRow {
            name: Some(name.into()),
            active,
            ..CacheRow::new(kind, id)
        }
    }

    fn customer(id: &str, name: &str) -> CacheRow {
        party(CacheKind::Customer, id, name, true)
    }

    fn item(id: &str, name: &str, sku: Option<&str>, desc: Option<&str>) -> CacheRow {
        CacheRow {
            name: Some(name.into()),
            sku: sku.map(str::to_string),
            description: desc.map(str::to_string),
            item_type: Some("Inventory".into()),
            unit_price: Some("2.50".parse().unwrap()),
            ..CacheRow::new(CacheKind::Item, id)
        }
    }

    fn snapshot(rows: Vec<CacheRow>) -> Snapshot {
        let now = Utc::now();
        let mut s = Snapshot::empty(now);
        for kind in INDEXED {
            let of_kind = rows.iter().filter(|r| r.kind == kind).cloned().collect();
            s = s.with_base(Base::build(kind, of_kind, now), 0);
        }
        s
    }

    fn names(a: &SearchAnswer) -> Vec<&str> {
        a.results.iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn folding() {
        assert_eq!(fold("  AHMAD \t Café  "), "ahmad café");
        assert_eq!(fold("أحمد"), fold("احمد"));
        assert_eq!(fold("إيمان"), "ايمان");
        assert_eq!(fold("مُحَمَّد"), "محمد", "harakat dropped");
        assert_eq!(fold("مـــحمد"), "محمد", "tatweel dropped");
        assert_eq!(fold("فاطمة"), "فاطمه");
        assert_eq!(fold("مصطفى"), "مصطفي");
        assert_eq!(fold("٠٧٩١٢٣"), "079123");
        assert_eq!(fold("ΣΟΦΙΑ"), "σοφια");
        assert_eq!(exact_key(" Amy's  Bird "), "amy's bird");
        assert_ne!(exact_key("أحمد"), exact_key("احمد"));
    }

    #[test]
    fn ranking_prefix_word_substring_then_active_length_alphabet() {
        let s = snapshot(vec![
            customer("1", "Sam Alhaddad"),                   // substring "had"
            customer("2", "Hadi Store"),                     // prefix
            customer("3", "Al Haddad Trading"),              // word prefix
            customer("4", "Hadeel"),                         // prefix, shorter
            party(CacheKind::Customer, "5", "Hadad", false), // prefix, inactive
            customer("6", "Abu Hadi"),                       // word prefix, shorter than 3
            customer("7", "Chad"),                           // substring, shorter
            customer("8", "Hadi Store Annex"),               // prefix, longer
            customer("9", "Zeina"),
        ]);
        for q in ["HAD", "had", "  Had "] {
            let a = s.search("client_names", q, None).unwrap();
            assert_eq!(
                names(&a),
                vec![
                    "Hadeel",
                    "Hadi Store",
                    "Hadi Store Annex",
                    "Hadad",
                    "Abu Hadi",
                    "Al Haddad Trading",
                    "Chad",
                    "Sam Alhaddad"
                ],
                "{q}"
            );
            assert_eq!(a.total, 8);
            assert_eq!(a.query, q);
            assert_eq!(a.results[0].rank, "prefix");
            assert_eq!(a.results[4].rank, "word_prefix");
            assert_eq!(a.results[7].rank, "substring");
        }
        // Two characters take the posting-list path: same ranking.
        let a = s.search("client_names", "Ha", None).unwrap();
        assert_eq!(
            names(&a)[..5],
            [
                "Hadeel",
                "Hadi Store",
                "Hadi Store Annex",
                "Hadad",
                "Abu Hadi"
            ]
        );
        assert_eq!(a.total, 8);
        // One character: equal ranks fall back to length then alphabet.
        let a = s.search("client_names", "z", None).unwrap();
        assert_eq!((names(&a), a.total), (vec!["Zeina"], 1));
        let a = s.search("client_names", "", None).unwrap();
        assert_eq!((a.results.len(), a.total), (0, 0));
        let a = s.search("client_names", "   ", Some(5)).unwrap();
        assert_eq!(a.total, 0);
        let a = s.search("client_names", "nothing like it", None).unwrap();
        assert_eq!((a.results.len(), a.total), (0, 0));
    }

    #[test]
    fn company_names_emails_and_arabic() {
        let s = snapshot(vec![
            CacheRow {
                company_name: Some("مؤسسة الأمل للتجارة".into()),
                email: Some("info@amal.jo".into()),
                ..customer("1", "أحمد الخطيب")
            },
            customer("2", "محمد احمد"),
            customer("3", "Ahmad Saleh"),
        ]);
        let a = s.search("client_names", "احمد", None).unwrap();
        assert_eq!(names(&a), vec!["أحمد الخطيب", "محمد احمد"]);
        assert_eq!(a.results[0].rank, "prefix");
        assert_eq!(a.results[1].rank, "word_prefix");
        let a = s.search("client_names", "الامل", None).unwrap();
        assert_eq!(a.results[0].matched, "company_name");
        assert_eq!(a.results[0].rank, "word_prefix");
        let a = s.search("client_names", "amal.jo", None).unwrap();
        assert_eq!(
            (a.results[0].matched, a.results[0].email.as_deref()),
            ("email", Some("info@amal.jo"))
        );
        let a = s.search("client_names", "AHM", None).unwrap();
        assert_eq!(names(&a), vec!["Ahmad Saleh"]);
        let hit = &a.results[0];
        assert_eq!((hit.kind.as_str(), hit.sku.as_ref()), ("Customer", None));
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"query": "AHM", "total": 1, "results": [{
                "id": "3", "name": "Ahmad Saleh", "type": "Customer", "active": true,
                "sku": null, "unit_price": null, "email": null, "company_name": null,
                "description": null, "matched": "name", "rank": "prefix"}]})
        );
    }

    #[test]
    fn limits_totals_and_index_names() {
        let rows: Vec<CacheRow> = (0..250)
            .map(|i| customer(&i.to_string(), &format!("Customer {i:03}")))
            .collect();
        let s = snapshot(rows);
        let a = s.search("client_names", "cust", None).unwrap();
        assert_eq!((a.results.len(), a.total), (DEFAULT_LIMIT, 250));
        assert_eq!(names(&a)[..2], ["Customer 000", "Customer 001"]);
        let a = s.search("client_names", "c", Some(1000)).unwrap();
        assert_eq!((a.results.len(), a.total), (MAX_LIMIT, 250));
        let a = s.search("client_names", "er", Some(0)).unwrap();
        assert_eq!(a.results.len(), 1, "at least one result when there are");
        assert_eq!(a.total, 250, "every name has an \"er\"");
        let err = s.search("clients", "x", None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"clients\""), "{text}");
        for name in INDEX_NAMES {
            assert!(text.contains(name), "{text}");
            assert!(s.search(name, "x", None).is_ok());
        }
        assert_eq!(s.status().len(), 6);
    }

    #[test]
    fn products_parts_and_descriptions() {
        let s = snapshot(vec![
            item(
                "1",
                "Arabic Coffee 250g",
                Some("COF-250"),
                Some("Cardamom blend"),
            ),
            item("2", "Turkish Coffee", Some("COF-100"), Some("Fine ground")),
            item("3", "Tea Glass", Some("GL-1"), Some("For coffee or tea")),
            CacheRow {
                item_type: Some("Service".into()),
                ..item("4", "Delivery", None, None)
            },
        ]);
        let a = s.search("product_names", "coffee", None).unwrap();
        assert_eq!(names(&a), vec!["Turkish Coffee", "Arabic Coffee 250g"]);
        assert_eq!(a.results[0].kind, "Inventory");
        assert_eq!(
            a.results[0].unit_price,
            Some("2.50".parse::<Decimal>().unwrap())
        );
        assert_eq!(
            serde_json::to_value(&a.results[0]).unwrap()["unit_price"],
            serde_json::json!(2.5)
        );
        assert_eq!(
            s.search("part_names", "coffee", None).unwrap(),
            s.search("product_names", "coffee", None).unwrap(),
            "part_names is product_names"
        );
        // Names and SKUs in product_names; only SKUs in part_numbers.
        let a = s.search("product_names", "cof-1", None).unwrap();
        assert_eq!(
            (names(&a), a.results[0].matched),
            (vec!["Turkish Coffee"], "sku")
        );
        let a = s.search("part_numbers", "cof", None).unwrap();
        assert_eq!(a.total, 2);
        assert!(a.results.iter().all(|h| h.matched == "sku"));
        assert_eq!(s.search("part_numbers", "tea", None).unwrap().total, 0);
        let a = s.search("product_descriptions", "coffee", None).unwrap();
        assert_eq!(
            (names(&a), a.results[0].matched),
            (vec!["Tea Glass"], "description")
        );
        let a = s.search("product_names", "deliv", None).unwrap();
        assert_eq!(a.results[0].kind, "Service");
        assert_eq!(s.search("vendor_names", "coffee", None).unwrap().total, 0);
    }

    /// The posting-list paths and the overlay agree with a plain scan of
    /// every entry, for every 1- to 4-character substring of the names.
    #[test]
    fn index_answers_equal_a_brute_force_scan() {
        let first = [
            "Ahmad", "Omar", "أحمد", "Lina", "Yousef", "ليلى", "Ali", "Sara",
        ];
        let last = ["Haddad", "Khatib", "الحداد", "Nasser", "O'Neil", "Saleh"];
        let mut rows = Vec::new();
        for i in 0..120 {
            let name = format!("{} {}", first[i % first.len()], last[(i / 8) % last.len()]);
            let name = if i % 11 == 0 {
                format!("{name} {i}")
            } else {
                name
            };
            let mut r = party(CacheKind::Customer, &i.to_string(), &name, i % 7 != 0);
            if i % 3 == 0 {
                r.company_name = Some(format!("{} Trading", last[i % last.len()]));
            }
            if i % 4 == 0 {
                r.email = Some(format!("user{i}@example.com"));
            }
            rows.push(r);
        }
        let mut s = snapshot(rows.clone());
        // Learnt later: one new, one replaced, one removed.
        let mut all: Vec<CacheRow> = rows.clone();
        let new = party(CacheKind::Customer, "500", "Ahmad Newcomer", true);
        s = s.with_upsert(new.clone(), 1);
        all.push(new);
        let changed = party(CacheKind::Customer, "5", "Renamed Haddad", true);
        s = s.with_upsert(changed.clone(), 2);
        all.retain(|r| r.id != "5");
        all.push(changed);
        s = s.with_removal(CacheKind::Customer, "9", 3);
        all.retain(|r| r.id != "9");

        let records: Vec<Record> = all.into_iter().map(Record::from_row).collect();
        let mut queries = std::collections::BTreeSet::new();
        for r in &records {
            let chars: Vec<char> = r.folded[0].chars().collect();
            for n in 1..=4 {
                for w in chars.windows(n) {
                    queries.insert(w.iter().collect::<String>());
                }
            }
        }
        let idx = FieldIndex::build(IndexId::ClientNames, &[]);
        for q in &queries {
            let folded = fold(q);
            if folded.is_empty() {
                continue;
            }
            let mut expected: Vec<(&Record, u8)> = records
                .iter()
                .filter_map(|r| idx.check(r, &folded).map(|(c, _)| (r, c)))
                .collect();
            expected.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.order(b.0)));
            let a = s.search("client_names", q, Some(MAX_LIMIT)).unwrap();
            assert_eq!(a.total, expected.len(), "total for {q:?}");
            let want: Vec<&str> = expected
                .iter()
                .take(MAX_LIMIT)
                .map(|(r, _)| r.id.as_str())
                .collect();
            let got: Vec<&str> = a.results.iter().map(|h| h.id.as_str()).collect();
            assert_eq!(got, want, "order for {q:?}");
        }
        assert!(queries.len() > 300, "{}", queries.len());
    }

    #[test]
    fn exact_lookups_prefer_active_and_see_the_overlay() {
        let s = snapshot(vec![
            customer("1", "Amy's Bird Sanctuary"),
            party(CacheKind::Customer, "2", "Dormant Ltd", false),
            item("7", "Espresso", Some("ESP-1"), None),
        ]);
        let f = s
            .find_by_name(CacheKind::Customer, "amy's  BIRD sanctuary")
            .unwrap();
        assert_eq!((f.id.as_str(), f.active), ("1", true));
        assert!(
            !s.find_by_name(CacheKind::Customer, "Dormant Ltd")
                .unwrap()
                .active
        );
        assert!(s.find_by_name(CacheKind::Customer, "Espresso").is_none());
        assert_eq!(s.find_by_sku("esp-1").unwrap().id, "7");
        assert_eq!(s.find_by_name(CacheKind::Item, "espresso").unwrap().id, "7");

        let s = s.with_removal(CacheKind::Item, "7", 1);
        assert!(s.find_by_sku("ESP-1").is_none());
        assert!(s.find_by_name(CacheKind::Item, "Espresso").is_none());
        assert_eq!(s.search("product_names", "esp", None).unwrap().total, 0);
        let s = s.with_upsert(item("8", "Espresso", Some("ESP-1"), None), 2);
        assert_eq!(s.find_by_name(CacheKind::Item, "Espresso").unwrap().id, "8");
        assert_eq!(s.entries(CacheKind::Item), 1);
        assert_eq!(s.pending(CacheKind::Item), 2);
        // A rebuild from rows read after change 1 keeps change 2 only.
        let rebuilt = s.with_base(Base::build(CacheKind::Item, Vec::new(), Utc::now()), 1);
        assert_eq!(rebuilt.pending(CacheKind::Item), 1);
        assert_eq!(rebuilt.find_by_sku("esp-1").unwrap().id, "8");
        let rebuilt = s.with_base(Base::build(CacheKind::Item, Vec::new(), Utc::now()), 2);
        assert_eq!(rebuilt.pending(CacheKind::Item), 0);
        assert!(rebuilt.find_by_sku("esp-1").is_none());
        // A change set at once.
        let s = s.with_changes(
            CacheKind::Item,
            vec![item("9", "Macchiato", None, None)],
            vec!["8".into()],
            3,
        );
        assert!(s.find_by_name(CacheKind::Item, "Espresso").is_none());
        assert_eq!(s.search("product_names", "macch", None).unwrap().total, 1);
        assert_eq!(s.entries(CacheKind::Item), 1);
    }
}
