//! The shared vocabulary of slurp.
//!
//! Every other crate speaks in these types: addresses ([`address`]), the
//! context record and the metadata stored beside its envelope
//! ([`context`]), roles and who may read whom ([`role`]), version ids and the
//! hybrid logical clock ([`version`]), partitions ([`partition`]) and the
//! framed CBOR encoding of everything persisted or sent ([`wire`]). This
//! crate depends on nothing else of ours, so it can sit at the bottom of the
//! crate graph.

pub mod address;
pub mod api;
pub mod context;
pub mod membership;
pub mod messages;
pub mod partition;
pub mod placement;
pub mod role;
pub mod version;
pub mod wire;

pub use address::{AddressError, Segment, Temporal, UcxlAddress};
pub use context::{
    AccessLevel, ContextLimits, ContextNode, DecisionLinks, RecordMeta, ValidationError,
    VersionInfo,
};
pub use membership::{
    AuditAnchor, CallerAuthorisation, CertificateFloor, ClusterId, DirectoryKey, JoinToken,
    KeyDirectory, MembershipError, NodeCertificate, RetiredEpoch, SealedGrant, Signed,
};
pub use partition::{Partition, PartitionScheme, Slot};
pub use placement::{
    Layout, LayoutDiff, LayoutError, Member, MemberIndex, PartitionChange, Placement,
};
pub use role::{Authority, RoleError, RoleName, RoleSet};
pub use version::{Hlc, HlcClock, VersionId, WriterId};
pub use wire::{Bytes, DecodeError, EncodeError, Framed};
