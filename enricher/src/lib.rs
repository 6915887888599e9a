//! The enricher: raw session events (`vnc.sessions.raw`) in, enriched sessions
//! (`vnc.sessions.enriched`, keyed by client IP) out, one per event.
//!
//! - [`geo`]: address class, country/city/coordinates from MaxMind-format city databases, ASN
//!   and organisation from `@ip-location-db/asn` CSV ranges ([`ranges`]) or a GeoLite2-ASN
//!   file, client↔server distance. `scripts/install-geo-data.sh` installs the free databases.
//! - [`reputation`]: CIDR lists tagging sources `known_bad` / `allow_listed`, reloaded when the
//!   files change.
//! - [`windows`]: per-source context over sliding windows of event time.
//! - [`features`]: the feature vector of `schemas::features::FEATURES`.
//! - [`stage`]: the bus stage and the pure [`stage::Enricher`] it drives.
//!
//! # State that scales out
//!
//! All window state is kept **per input partition**. `vnc.sessions.raw` is keyed by client IP,
//! so every event of one source is in one partition, in one order; the state of a partition
//! depends only on that partition's records. Whichever instance of the consumer group processes
//! a partition therefore computes the same context, and 1 or 3 instances produce the same
//! enriched records. Table caps apply per partition for the same reason (an instance holding
//! every partition must evict exactly what three instances would).
//!
//! Per-server context is not keyed by client, and is handled so as to stay deterministic:
//! - "first time this source reached this server" is kept in the source's own state, keyed by
//!   (client, server): exact.
//! - "countries seen for this server's clients" is kept per partition: a country counts as new
//!   for a server when no client *of the same partition* came from it before. This over-reports
//!   novelty by at most one event per (server, country, partition): with P partitions a country
//!   can be "new" up to P times. We accept that difference rather than add a second, server-keyed
//!   topic and a join; it is the same for any number of instances, which a consistent score
//!   needs more than exactness.
//!
//! # State after a restart or rebalance: bounded replay of the input
//!
//! When an instance gets a record of a partition whose state it does not hold, or whose state
//! does not end right before that record (the partition was processed elsewhere meanwhile), it
//! reads that partition of `vnc.sessions.raw` back, from the record before backwards, until
//! event time reaches `replay_horizon` (default: the longest window) before the partition's
//! first event here or `max_replay_records`, and rebuilds the windows from those records before
//! going on. We chose replay over a compacted changelog topic because the input already holds
//! everything needed (7 days' retention), there is nothing to keep consistent between two
//! topics, and no extra writes per event; the cost is a bounded read at assignment. Detecting the
//! need from offsets rather than from rebalance callbacks keeps the stage independent of the bus.
//! Replay reproduces window counts exactly. Novelty (first seen, new to server, new country)
//! after a rebalance reaches back only as far as the replay horizon; raise `--replay-horizon-secs`
//! to make it reach further.

pub mod features;
pub mod geo;
pub mod history;
pub mod lru;
pub mod ranges;
pub mod reputation;
pub mod stage;
pub mod windows;

pub use geo::{classify, AddressClass, GeoDatabases};
pub use history::{InputHistory, KafkaHistory, NoHistory};
pub use reputation::Reputation;
pub use stage::{Enricher, EnricherConfig, EnricherStage};
pub use windows::{PartitionWindows, SourceContext, WindowConfig};
