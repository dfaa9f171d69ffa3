//! Topic administration shared by the daemon and the client commands.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::{Error, Result};

/// Creates each of `names` that does not exist yet, with the configured partitions and
/// replication factor.
pub async fn ensure_topics(kafka: &KafkaConfig, names: &[&str]) -> Result<()> {
    create(kafka, names, kafka.topic_partitions, false).await
}

/// Like [`ensure_topics`], with `cleanup.policy=compact` (the latest record per key is kept).
pub async fn ensure_compacted_topics(kafka: &KafkaConfig, names: &[&str]) -> Result<()> {
    create(kafka, names, kafka.topic_partitions, true).await
}

/// The models topic: compacted, of a single partition (its readers rely on one order).
pub async fn ensure_models_topic(kafka: &KafkaConfig) -> Result<()> {
    create(kafka, &[&kafka.models_topic], 1, true).await
}

async fn create(kafka: &KafkaConfig, names: &[&str], partitions: i32, compacted: bool) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        kafka.client_config().create().map_err(Error::kafka("creating admin client"))?;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|name| {
            let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(kafka.topic_replication_factor));
            if compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(&topics, &options).await.map_err(Error::kafka("creating topics"))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(Error::CreateTopic { topic, code }),
        }
    }
    Ok(())
}
