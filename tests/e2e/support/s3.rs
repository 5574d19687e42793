//! A real S3-compatible object store for tests: moto's standalone server (`moto_server`, from
//! the PyPI package `moto[server]`), an HTTP S3 API on 127.0.0.1 on a free port, killed on drop.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Credentials the server accepts (any work; these are passed explicitly).
pub const ACCESS_KEY: &str = "tributary-test";
/// See [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "tributary-test-secret";

/// A running S3 server, killed when dropped.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl S3Server {
    /// Starts a server, or returns `None` after saying loudly why the test is skipped (no
    /// `moto_server` and `CI` unset). Under `CI=true` a missing server fails the test.
    pub fn start_or_skip(test: &str) -> Option<S3Server> {
        let found = Command::new("moto_server")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            let why = "no S3 server: `pip install \"moto[server]==5.2.5\"` (or run .ci/run)";
            assert!(
                std::env::var("CI").is_err(),
                "{test}: {why} (CI is set, so this fails)"
            );
            eprintln!("SKIPPED {test}: {why}");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Creates `bucket` (through boto3, which moto brings along).
    pub fn create_bucket(&self, bucket: &str) {
        let script = format!(
            "import boto3\nboto3.client('s3', endpoint_url='{}', aws_access_key_id='{ACCESS_KEY}', \
             aws_secret_access_key='{SECRET_KEY}', region_name='us-east-1').create_bucket(Bucket='{bucket}')",
            self.endpoint
        );
        let status = Command::new("python3")
            .args(["-c", &script])
            .status()
            .expect("run python3");
        assert!(status.success(), "create bucket {bucket}");
    }

    /// The environment a `tributary` process (or the pyiceberg reader) needs to use it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("TRIBUTARY_S3_ENDPOINT", self.endpoint.clone()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
