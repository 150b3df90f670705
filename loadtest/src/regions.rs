//! `--regions`: two regions (each a `parley run` cluster of one meta node, two owners and an
//! edge, with its own Redis) joined by one Kafka-protocol broker (tansu), for measuring what
//! crosses between them.

use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use parley_client::Client;
use parley_client::ClientConfig;
use parley_client::Event;
use parley_client::Message;
use parley_testkit::KafkaBroker;
use parley_testkit::ProcessCluster;
use parley_testkit::processes::CLUSTER_APP_ID;

pub struct Regions {
    pub broker: KafkaBroker,
    /// "eu" and "us", in that order.
    pub clusters: Vec<ProcessCluster>,
}

impl Regions {
    /// Starts the broker and both regions, and waits until a message crosses each way.
    pub async fn start(binary: &Path) -> anyhow::Result<Regions> {
        let broker = KafkaBroker::start();
        let mut clusters = Vec::new();
        for (name, remote) in [("eu", "us"), ("us", "eu")] {
            clusters.push(ProcessCluster::region(binary, &broker, name, remote).await);
        }
        let regions = Regions { broker, clusters };
        regions.until_crossing().await?;
        Ok(regions)
    }

    /// The edges' URLs: eu's, then us's.
    pub fn urls(&self) -> Vec<String> {
        self.clusters
            .iter()
            .flat_map(ProcessCluster::edge_urls)
            .collect()
    }

    /// Every node of both regions.
    pub fn pids(&self) -> Vec<u32> {
        self.clusters
            .iter()
            .flat_map(ProcessCluster::pids)
            .collect()
    }

    /// Sends probes from eu until one reaches us, and back: both bridges consume.
    async fn until_crossing(&self) -> anyhow::Result<()> {
        let urls = self.urls();
        let login = |url: String, uid: &'static str| async move {
            let (client, events) = Client::login(ClientConfig::new(&url, CLUSTER_APP_ID, uid))
                .await
                .map_err(|error| anyhow::anyhow!("login: {error}"))?;
            client.join("regions-probe").await?;
            anyhow::Ok((client, events))
        };
        let (eu, mut eu_events) = login(urls[0].clone(), "probe-eu").await?;
        let (us, mut us_events) = login(urls[1].clone(), "probe-us").await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut eu_heard, mut us_heard) = (false, false);
        while !(eu_heard && us_heard) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no message crossed between the regions within 60 s"
            );
            eu.send_message("regions-probe", Message::text("probe"))
                .await?;
            us.send_message("regions-probe", Message::text("probe"))
                .await?;
            tokio::time::sleep(Duration::from_millis(250)).await;
            while let Ok(event) = eu_events.try_recv() {
                eu_heard |= matches!(event, Event::ChannelMessage(_));
            }
            while let Ok(event) = us_events.try_recv() {
                us_heard |= matches!(event, Event::ChannelMessage(_));
            }
        }
        Ok(())
    }
}
