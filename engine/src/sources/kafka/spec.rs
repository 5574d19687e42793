//! The Kafka source's settings: `kafka://HOST:PORT[,HOST:PORT…]/TOPIC[,TOPIC…]` parsed, and
//! where partitions without a resume position start.

use std::time::Duration;

use super::idle;
use crate::kafka_client::{parse_brokers, KafkaClientOptions};

/// Where partitions without a resume position start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest retained message.
    #[default]
    Earliest,
    /// Only messages produced after the start.
    Latest,
    /// The consumer group's committed offset (earliest where there is none).
    Committed,
}

/// A parsed `kafka://HOST:PORT[,HOST:PORT…]/TOPIC[,TOPIC…]` source with its client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSourceSpec {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// Topics, one per source table (`server.schema.table`).
    pub topics: Vec<String>,
    /// Topic patterns (`~REGEX` in the URL, matched whole): every topic that matches is read,
    /// and, when following, a topic created later that matches rebuilds the run with it.
    pub patterns: Vec<String>,
    /// Consumer group for committed offsets (monitoring and `--kafka-start committed`).
    pub group: String,
    /// Where partitions without a resume position start.
    pub start: StartFrom,
    /// Pass-through client options.
    pub client: KafkaClientOptions,
    /// Quiet time that, after the start watermarks are reached, means caught up.
    pub idle_quiet: Duration,
}

impl KafkaSourceSpec {
    /// Parses the part after `kafka://`: `HOST:PORT[,HOST:PORT]/TOPIC[,TOPIC]`.
    pub fn parse(rest: &str) -> Result<Self, String> {
        let (brokers, topics) = rest.split_once('/').ok_or(
            "kafka:// needs HOST:PORT/TOPIC, e.g. kafka://localhost:9092/dbserver1.public.orders",
        )?;
        parse_brokers(brokers)?;
        let (patterns, topics): (Vec<String>, Vec<String>) = topics
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .partition(|t| t.starts_with('~'));
        let patterns: Vec<String> = patterns.iter().map(|p| p[1..].to_owned()).collect();
        if topics.is_empty() && patterns.is_empty() {
            return Err("kafka:// needs at least one topic after the `/`".into());
        }
        if let Some((pattern, error)) = patterns
            .iter()
            .find_map(|p| topic_pattern(p).err().map(|e| (p, e)))
        {
            return Err(format!("`~{pattern}` is not a regular expression: {error}"));
        }
        if let Some(bad) = topics.iter().find(|t| !valid_topic(t)) {
            return Err(format!(
                "`{bad}` is not a Kafka topic name (letters, digits, `.`, `_`, `-`)"
            ));
        }
        Ok(KafkaSourceSpec {
            brokers: brokers.to_owned(),
            topics,
            patterns,
            group: "tributary".to_owned(),
            start: StartFrom::default(),
            client: KafkaClientOptions::default(),
            idle_quiet: idle::DEFAULT_QUIET,
        })
    }
}

/// A topic pattern, matched whole.
pub(super) fn topic_pattern(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

impl KafkaSourceSpec {
    /// Whether `topic` is one of the topics named or matches a pattern (Kafka's internal
    /// `__…` topics never do).
    pub(super) fn matches(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t == topic)
            || (!topic.starts_with("__")
                && self
                    .patterns
                    .iter()
                    .any(|p| topic_pattern(p).is_ok_and(|r| r.is_match(topic))))
    }
}

fn valid_topic(topic: &str) -> bool {
    topic.len() <= 249
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_brokers_and_topics() {
        let spec = KafkaSourceSpec::parse("a:9092,b:9093/x.public.orders, x.public.items").unwrap();
        assert_eq!(spec.brokers, "a:9092,b:9093");
        assert_eq!(spec.topics, ["x.public.orders", "x.public.items"]);
        let patterned = KafkaSourceSpec::parse(r"a:9092/~x\.public\..*,y.t").unwrap();
        assert_eq!(
            (patterned.topics, patterned.patterns),
            (vec!["y.t".to_owned()], vec![r"x\.public\..*".to_owned()])
        );
        let spec = KafkaSourceSpec::parse(r"a:9092/~x\.public\..*").unwrap();
        assert!(
            spec.matches("x.public.orders")
                && !spec.matches("x.public")
                && !spec.matches("__consumer_offsets")
        );
        assert!(KafkaSourceSpec::parse("a:9092/~(").is_err());
        for bad in [
            "a:9092",
            "a:9092/",
            "a/t",
            "a:x/t",
            ":9092/t",
            "a:1/bad topic",
        ] {
            assert!(KafkaSourceSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn start_modes() {
        assert_eq!("committed".parse(), Ok(StartFrom::Committed));
        assert_eq!("latest".parse(), Ok(StartFrom::Latest));
        assert!("nope".parse::<StartFrom>().is_err());
    }
}
