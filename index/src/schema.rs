//! The index schema and how a context becomes an index document.
//!
//! One document per storage key holds the newest version of that context a
//! node can read. Text fields are analysed with one analyser (split on
//! non-alphanumerics, drop tokens over 64 bytes, lowercase, drop English
//! stop words) and keep positions so phrase queries work. Filters use exact
//! keyword fields: the reader roles, every ancestor of the path (so a path
//! prefix is one term lookup), facets for tags and technologies, and the
//! slot of the key for slot scopes ([`crate::scope`]). The
//! field names are part of the query language (`summary:cache`) and of the
//! statistics exchanged for distributed ranking, so they are stable.

use tantivy::schema::{
    FAST, FacetOptions, Field, INDEXED, IndexRecordOption, NumericOptions, STORED, STRING, Schema,
    TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, TantivyDocument, Term};

use slurp_protocol::{ContextNode, RoleName, Slot, VersionId};

use crate::error::IndexError;

/// Name of the analyser of every full-text field.
pub const TEXT_ANALYZER: &str = "slurp_text";

/// Longest token kept by the analyser, in bytes; longer tokens (base64
/// blobs, hashes) are dropped.
pub const MAX_TOKEN_LEN: usize = 64;

/// Longest tag or technology value kept, in bytes; longer values are cut on
/// a character boundary.
pub const MAX_FACET_VALUE_LEN: usize = 256;

/// Longest path accepted, in bytes (a UCXL address is at most 1 KiB).
pub const MAX_PATH_LEN: usize = 4_096;

/// Deepest path accepted, in components. Every ancestor is indexed as a
/// filter term, so depth bounds the terms per document.
pub const MAX_PATH_DEPTH: usize = 64;

/// Field names. Stable: they appear in query text and in statistics.
pub mod names {
    pub const KEY: &str = "key";
    pub const VERSION: &str = "version";
    pub const HLC: &str = "hlc";
    pub const PATH: &str = "path";
    pub const PATH_PREFIX: &str = "path_prefix";
    pub const PATH_TEXT: &str = "path_text";
    pub const SUMMARY: &str = "summary";
    pub const PURPOSE: &str = "purpose";
    pub const INSIGHTS: &str = "insights";
    pub const LABELS: &str = "labels";
    pub const FACETS: &str = "facets";
    pub const READERS: &str = "readers";
    pub const GENERATED_AT: &str = "generated_at";
    pub const SLOT: &str = "slot";
}

/// Facet root of tags: a tag `security` is the facet `/tag/security`.
pub const TAG_FACET_ROOT: &str = "tag";
/// Facet root of technologies: `rust` is the facet `/tech/rust`.
pub const TECH_FACET_ROOT: &str = "tech";

/// Handles of every field of the schema.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    pub key: Field,
    pub version: Field,
    pub hlc: Field,
    pub path: Field,
    pub path_prefix: Field,
    pub path_text: Field,
    pub summary: Field,
    pub purpose: Field,
    pub insights: Field,
    /// Tags and technologies as words, so free text finds them too.
    pub labels: Field,
    pub facets: Field,
    pub readers: Field,
    pub generated_at: Field,
    /// The slot of the key ([`Slot::of`]), for slot scopes.
    pub slot: Field,
}

impl Fields {
    /// The fields free text is searched in.
    pub fn text_fields(&self) -> [Field; 5] {
        [
            self.summary,
            self.purpose,
            self.insights,
            self.path_text,
            self.labels,
        ]
    }
}

/// Builds the schema. The same code on every node gives the same field ids,
/// which statistics exchange relies on only through field names.
pub(crate) fn build_schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_indexing = TextFieldIndexing::default()
        .set_tokenizer(TEXT_ANALYZER)
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let text = TextOptions::default().set_indexing_options(text_indexing);
    let stored_text = text.clone().set_stored();
    let fields = Fields {
        key: b.add_text_field(names::KEY, STRING | STORED),
        version: b.add_text_field(names::VERSION, STORED),
        hlc: b.add_u64_field(names::HLC, NumericOptions::default() | FAST),
        path: b.add_text_field(names::PATH, STRING | STORED),
        path_prefix: b.add_text_field(names::PATH_PREFIX, STRING),
        path_text: b.add_text_field(names::PATH_TEXT, text.clone()),
        summary: b.add_text_field(names::SUMMARY, stored_text.clone()),
        purpose: b.add_text_field(names::PURPOSE, text.clone()),
        insights: b.add_text_field(names::INSIGHTS, stored_text),
        labels: b.add_text_field(names::LABELS, text.clone()),
        facets: b.add_facet_field(names::FACETS, FacetOptions::default()),
        readers: b.add_text_field(names::READERS, STRING),
        generated_at: b.add_u64_field(names::GENERATED_AT, FAST | STORED),
        slot: b.add_u64_field(names::SLOT, INDEXED | FAST),
    };
    (b.build(), fields)
}

/// The analyser of every full-text field.
pub(crate) fn text_analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_LEN))
        .filter(LowerCaser)
        .dynamic();
    match StopWordFilter::new(Language::English) {
        Some(stop) => builder.filter_dynamic(stop).build(),
        None => builder.build(),
    }
}

/// Registers the analyser on an index (needed after every open or create).
pub(crate) fn register_analyzers(index: &Index) {
    index.tokenizers().register(TEXT_ANALYZER, text_analyzer());
}

/// One context as the node hands it to the index: the decrypted context,
/// its storage key, the version it is, and the roles that may read it (the
/// reader closure the envelope is sealed to).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    /// The storage key (`UcxlAddress::key`); must match the context's
    /// address.
    pub key: String,
    /// The version this context is.
    pub version: VersionId,
    /// Roles that may find this context. A search by any other role never
    /// returns or counts it.
    pub readers: Vec<RoleName>,
    /// The plaintext context. Held in memory only.
    pub context: ContextNode,
}

impl IndexEntry {
    /// An entry keyed by the context's own address.
    pub fn new(version: VersionId, readers: Vec<RoleName>, context: ContextNode) -> Self {
        IndexEntry {
            key: context.address.key(),
            version,
            readers,
            context,
        }
    }
}

/// The normal form of a tag or technology: control characters (which the
/// facet encoding reserves) turned into spaces, trimmed, lowercased, cut to
/// [`MAX_FACET_VALUE_LEN`] bytes. Filters are normalised the same way, so
/// matching is case-insensitive. Empty after trimming means "no value".
pub fn normalize_facet_value(value: &str) -> Option<String> {
    let cleaned: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let v = cleaned.trim().to_lowercase();
    if v.is_empty() {
        return None;
    }
    let mut end = v.len().min(MAX_FACET_VALUE_LEN);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    Some(v[..end].to_string())
}

/// The facet of a tag or technology under `root`.
pub(crate) fn facet(root: &str, normalized: &str) -> tantivy::schema::Facet {
    tantivy::schema::Facet::from_path([root, normalized])
}

/// The normal form of a path: no leading or trailing slashes.
pub fn normalize_path(path: &str) -> &str {
    path.trim_matches('/')
}

/// Every ancestor of a normalised path, itself included, shortest first:
/// `src/auth/x.rs` gives `src`, `src/auth`, `src/auth/x.rs`. Empty
/// components (`a//b`) are kept as written.
pub(crate) fn path_ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/')
        .map(move |(i, _)| &path[..i])
        .chain(std::iter::once(path))
        .filter(|p| !p.is_empty())
}

impl Fields {
    pub fn key_term(&self, key: &str) -> Term {
        Term::from_field_text(self.key, key)
    }

    pub fn reader_term(&self, role: &RoleName) -> Term {
        Term::from_field_text(self.readers, role.as_str())
    }

    /// Turns an entry into an index document, checking what the index
    /// relies on.
    pub fn document(&self, entry: &IndexEntry) -> Result<TantivyDocument, IndexError> {
        let ctx = &entry.context;
        let expected_key = ctx.address.key();
        if entry.key != expected_key {
            return Err(IndexError::invalid(
                &entry.key,
                format!("key does not match the context address (expected {expected_key:?})"),
            ));
        }
        if entry.readers.is_empty() {
            return Err(IndexError::invalid(
                &entry.key,
                "no reader roles: no search could ever return it",
            ));
        }
        let path = normalize_path(&ctx.path);
        if path.len() > MAX_PATH_LEN {
            return Err(IndexError::invalid(
                &entry.key,
                format!("path is {} bytes, over {MAX_PATH_LEN}", path.len()),
            ));
        }
        let depth = path.split('/').count();
        if depth > MAX_PATH_DEPTH {
            return Err(IndexError::invalid(
                &entry.key,
                format!("path is {depth} components deep, over {MAX_PATH_DEPTH}"),
            ));
        }

        let mut doc = TantivyDocument::default();
        doc.add_text(self.key, &entry.key);
        doc.add_text(self.version, entry.version.to_string());
        doc.add_u64(self.hlc, entry.version.hlc.as_u64());
        doc.add_text(self.path, path);
        for ancestor in path_ancestors(path) {
            doc.add_text(self.path_prefix, ancestor);
        }
        doc.add_text(self.path_text, path);
        doc.add_text(self.summary, &ctx.summary);
        if !ctx.purpose.is_empty() {
            doc.add_text(self.purpose, &ctx.purpose);
        }
        for insight in &ctx.insights {
            doc.add_text(self.insights, insight);
        }
        for label in ctx.tags.iter().chain(&ctx.technologies) {
            doc.add_text(self.labels, label);
        }
        let mut facets = std::collections::BTreeSet::new();
        for (root, values) in [
            (TAG_FACET_ROOT, &ctx.tags),
            (TECH_FACET_ROOT, &ctx.technologies),
        ] {
            for v in values.iter().filter_map(|v| normalize_facet_value(v)) {
                facets.insert(facet(root, &v));
            }
        }
        for f in facets {
            doc.add_facet(self.facets, f);
        }
        let mut readers: Vec<&RoleName> = entry.readers.iter().collect();
        readers.sort();
        readers.dedup();
        for r in readers {
            doc.add_text(self.readers, r.as_str());
        }
        doc.add_u64(self.generated_at, ctx.generated_at);
        doc.add_u64(self.slot, u64::from(Slot::of(&entry.key).0));
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_are_directory_prefixes() {
        let v: Vec<&str> = path_ancestors("src/auth/login.rs").collect();
        assert_eq!(v, ["src", "src/auth", "src/auth/login.rs"]);
        assert_eq!(path_ancestors("").count(), 0);
        assert_eq!(path_ancestors("x").collect::<Vec<_>>(), ["x"]);
    }

    #[test]
    fn facet_values_are_normalized() {
        assert_eq!(normalize_facet_value("  Rust "), Some("rust".into()));
        assert_eq!(normalize_facet_value("   "), None);
        assert_eq!(normalize_facet_value("a\u{0}b\n"), Some("a b".into()));
        let long = "é".repeat(MAX_FACET_VALUE_LEN);
        let cut = normalize_facet_value(&long).unwrap();
        assert!(cut.len() <= MAX_FACET_VALUE_LEN);
        assert!(long.starts_with(&cut));
    }

    #[test]
    fn analyzer_splits_lowercases_and_drops_stop_words() {
        let mut a = text_analyzer();
        let mut s = a.token_stream("The Token_Cache of src/Auth");
        let mut out = vec![];
        while s.advance() {
            out.push(s.token().text.clone());
        }
        assert_eq!(out, ["token", "cache", "src", "auth"]);
    }
}
