//! An Iceberg REST catalog server for tests: `tests/py/rest_catalog.py`, the REST endpoints
//! served over HTTP by a separate Python process on a free port (commits applied by pyiceberg's
//! SqlCatalog on a SQLite file), killed on drop.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running REST catalog, killed when dropped.
#[derive(Debug)]
pub struct RestServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub uri: String,
}

impl RestServer {
    /// Starts a server keeping its catalog in `db`; with `token`, requests need that bearer
    /// token. Needs pyiceberg (see `iceberg::pyiceberg_available`).
    pub fn start(db: &Path, token: Option<&str>) -> RestServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let script = super::tests_path("py/rest_catalog.py");
        let mut command = Command::new("python3");
        command
            .arg(script)
            .args(["--port", &port.to_string(), "--db"])
            .arg(db)
            .stdout(Stdio::null());
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        let child = command.spawn().expect("spawn rest_catalog.py");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the REST catalog did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        RestServer {
            child,
            uri: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for RestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
