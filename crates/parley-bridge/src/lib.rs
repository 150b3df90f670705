//! Regions over Kafka. Each region runs its own cluster; a channel with members in several
//! regions gets every message in every region.
//!
//! - Owners publish, through [`KafkaRegionLink`], on their region's topic
//!   (`parley-region-NAME`): the messages of channels that have members elsewhere, and the
//!   region's interest in a channel (it got its first member, or lost its last). Records are
//!   keyed `appId/channelId`, so one channel's records stay in one partition, in order.
//! - Owners publish where their users are (a first session, the last gone), and route a peer
//!   message for a user with no session here but sessions in another region to that region;
//!   the receiving region delivers it (or keeps it offline) and publishes how that ended, for
//!   the sender's owner, who is waiting. The region directory is kept in the store.
//! - Every owner node also runs a [`Bridge`]: one consumer group per region shares the other
//!   regions' topics among the region's owners; each record goes to its channel's owner (in
//!   process or over gRPC, by the ring), and its offset is stored only once that owner has
//!   taken it, so a bridge that dies re-reads what it had not delivered. Owners drop repeats by
//!   message ID. A region reading a topic for the first time reads it from its start for the
//!   state it holds (users' regions, channel interest) and delivers only the traffic that
//!   comes after.
//!
//! See docs/adr/0006-regions-over-kafka.md.
//!
//! Architecture invariant: publishing never waits (librdkafka's bounded queue; overflow is
//! dropped and counted), and the consumer never skips a record the owner could still take.

mod consume;
mod link;
mod record;

pub use consume::Bridge;
pub use link::KafkaRegionLink;
pub use record::topic;

/// This region and the ones it exchanges traffic with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionConfig {
    /// `HOST:PORT,…`
    pub brokers: String,
    /// This region's name (letters, digits, `-`, `_`, `.`).
    pub region: String,
    /// The other regions.
    pub remote_regions: Vec<String>,
    /// Partitions of a region's topic, when Parley creates it.
    pub partitions: i32,
}

impl RegionConfig {
    /// Checks the region names: Kafka topic names are made of them.
    pub fn validate(&self) -> Result<(), String> {
        for name in std::iter::once(&self.region).chain(&self.remote_regions) {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(format!(
                    "region name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
                ));
            }
        }
        if self.remote_regions.contains(&self.region) {
            return Err(format!(
                "region {:?} is named among the remote regions",
                self.region
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(region: &str, remote: &[&str]) -> RegionConfig {
        RegionConfig {
            brokers: "127.0.0.1:9092".into(),
            region: region.into(),
            remote_regions: remote.iter().map(|name| name.to_string()).collect(),
            partitions: 6,
        }
    }

    #[test]
    fn region_names_must_make_topic_names() {
        assert!(config("eu-west.1", &["us_east"]).validate().is_ok());
        assert!(config("", &["us"]).validate().is_err());
        assert!(config("eu west", &["us"]).validate().is_err());
        assert!(config("eu", &["us/1"]).validate().is_err());
        assert!(config("eu", &["eu"]).validate().is_err());
    }
}
