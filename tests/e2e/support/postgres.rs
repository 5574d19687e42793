//! A real PostgreSQL server for tests: a fresh cluster (`initdb`) in a temporary directory with
//! `wal_level=logical`, listening on 127.0.0.1 on a free port, stopped and removed on drop; plus
//! running SQL through `psql`.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory holding `initdb` and `postgres`: `TRIBUTARY_PG_BIN`, else `pg_config
/// --bindir`, else the newest `/usr/lib/postgresql/*/bin` (Debian's packages).
pub fn postgres_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TRIBUTARY_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|d| d.join("postgres").is_file());
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|d| d.join("postgres").is_file());
    if from_pg_config.is_some() {
        return from_pg_config;
    }
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("postgres").is_file())
        .collect();
    debian.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    debian.pop()
}

/// A running server, stopped (fast shutdown) and deleted when dropped.
#[derive(Debug)]
pub struct Postgres {
    child: Option<Child>,
    bindir: PathBuf,
    data: tempfile::TempDir,
    /// The port on 127.0.0.1.
    pub port: u16,
    /// Whether commands run as the `postgres` user (the tests run as root).
    as_postgres: bool,
    /// Extra `-c` settings the server was started with.
    settings: Vec<(String, String)>,
}

impl Postgres {
    /// Starts a server, or returns `None` after saying loudly why the test is skipped (no
    /// PostgreSQL binaries and `CI` unset). Under `CI=true` missing binaries fail the test.
    pub fn start_or_skip(test: &str) -> Option<Postgres> {
        Postgres::start_with_or_skip(test, &[])
    }

    /// Like [`Postgres::start_or_skip`], with extra `-c NAME=VALUE` server settings (they
    /// override the defaults, e.g. `("wal_level", "replica")`).
    pub fn start_with_or_skip(test: &str, settings: &[(&str, &str)]) -> Option<Postgres> {
        let Some(bindir) = postgres_bindir() else {
            let why = "no PostgreSQL server binaries: `apt-get install postgresql` (Debian) or \
                       set TRIBUTARY_PG_BIN=/path/to/bin";
            assert!(
                std::env::var("CI").is_err(),
                "{test}: {why} (CI is set, so this fails)"
            );
            eprintln!("SKIPPED {test}: {why}");
            return None;
        };
        Some(Postgres::start(bindir, settings))
    }

    fn start(bindir: PathBuf, settings: &[(&str, &str)]) -> Postgres {
        let data = tempfile::Builder::new()
            .prefix("tributary-pg-")
            .tempdir()
            .expect("temp dir");
        // initdb refuses to run as root: hand the directory to the `postgres` user then.
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(data.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the data directory to postgres");
        }
        let cluster = data.path().join("cluster");
        let mut pg = Postgres {
            child: None,
            bindir,
            data,
            port: free_port(),
            as_postgres,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let output = pg
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&cluster)
            .output()
            .expect("spawn initdb");
        assert!(
            output.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        pg.spawn_server();
        pg
    }

    fn spawn_server(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("server.log"))
            .expect("log file");
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data.path().join("cluster"))
            .args(["-c", "listen_addresses=127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-c", "wal_level=logical", "-c", "max_wal_senders=10"])
            .args(["-c", "max_replication_slots=10", "-c", "fsync=off"])
            .args(["-c", "unix_socket_directories="])
            .args(
                self.settings
                    .iter()
                    .flat_map(|(name, value)| ["-c".to_owned(), format!("{name}={value}")]),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Stops the server (fast shutdown: clients are disconnected) and starts it again on the
    /// same port and data, after `down` has passed.
    pub fn restart(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.spawn_server();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT to the postmaster = fast shutdown (the child may be `runuser`, which does
            // not pass signals on).
            let pid = std::fs::read_to_string(self.data.path().join("cluster/postmaster.pid"))
                .ok()
                .and_then(|text| text.lines().next().map(str::to_owned))
                .unwrap_or_else(|| child.id().to_string());
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ok = Command::new(self.bindir.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("postgres did not start: {}", self.log());
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }

    /// `postgres://USER@127.0.0.1:PORT/DB`.
    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs `sql` in database `db` as the superuser through `psql` (stopping at the first
    /// error) and returns its unaligned, tuples-only output; panics on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let output = self.psql_output(db, "postgres", sql);
        assert!(
            output.status.success(),
            "psql failed: {}\n{sql}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `psql` on `db` as `user`: unaligned, tuples only, stopping at the first error.
    fn psql_command(&self, db: &str, user: &str) -> Command {
        let mut command = Command::new(self.bindir.join("psql"));
        command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", user])
            .args(["-d", db, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
        command
    }

    /// A `psql` session on `db` reading SQL from its standard input (write statements to it;
    /// closing it ends the session): a writer that does not start a process per transaction.
    pub fn psql_session(&self, db: &str) -> Child {
        self.psql_command(db, "postgres")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn psql")
    }

    /// Runs `sql` as `user` and returns psql's raw output (for statements expected to fail).
    pub fn psql_output(&self, db: &str, user: &str, sql: &str) -> std::process::Output {
        self.psql_command(db, user)
            .stdin(Stdio::null())
            .arg("-c")
            .arg(sql)
            .output()
            .expect("spawn psql")
    }

    /// Runs `sql` (one transaction, e.g. `BEGIN; …; COMMIT;`) as the superuser, then reads
    /// the WAL insert position: at or after the transaction's commit record and before anything
    /// a later transaction writes.
    pub fn commit_and_lsn(&self, db: &str, sql: &str) -> u64 {
        let mut child = self
            .psql_command(db, "postgres")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn psql");
        let script = format!("{sql}\nSELECT pg_current_wal_insert_lsn();\n");
        child
            .stdin
            .take()
            .expect("psql stdin")
            .write_all(script.as_bytes())
            .expect("write to psql");
        let output = child.wait_with_output().expect("psql output");
        assert!(
            output.status.success(),
            "psql failed: {}\n{sql}",
            String::from_utf8_lossy(&output.stderr)
        );
        parse_lsn(String::from_utf8_lossy(&output.stdout).trim())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `X/Y` (hex) → the 64-bit LSN.
pub fn parse_lsn(text: &str) -> u64 {
    let (high, low) = text.split_once('/').expect("an LSN is X/Y");
    (u64::from_str_radix(high, 16).expect("hex") << 32) | u64::from_str_radix(low, 16).expect("hex")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
