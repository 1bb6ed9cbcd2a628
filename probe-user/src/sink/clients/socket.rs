//! The agent's Unix socket (`--socket PATH`): bound at start, before anything else is created
//! (a refusal leaves nothing behind), mode 0600 or 0660 for a group (`--socket-group`); one
//! writer task per client; removed at exit.
//!
//! A socket file left by an agent that is gone (nothing accepts on it) is replaced; one that
//! a running agent serves is refused, as is any path that is not a socket.

use std::{
    io,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use nix::{
    sys::stat::{umask, Mode},
    unistd::{chown, Group},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{unix::OwnedReadHalf, UnixListener, UnixStream},
    sync::oneshot,
    task::JoinSet,
};

use super::{Hub, Subscription};

/// Clients served at once; more are turned away (the socket is for the few people looking
/// at a node during an incident, and each client costs a queue).
pub const MAX_CLIENTS: usize = 64;

/// How long the clients get to read their last lines once the stream has ended.
const LAST_LINES_TIMEOUT: Duration = Duration::from_secs(2);

/// The bound socket; its file is removed when it is dropped.
pub struct ClientSocket {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
}

impl ClientSocket {
    /// Binds `path` (mode 0600; 0660 and owned by `group` when given).
    pub fn bind(path: &Path, group: Option<&str>) -> Result<Self> {
        let gid = group.map(group_id).transpose()?;
        check_directory(path)?;
        replace_stale(path)?;
        // Mode 0600 from the start: nobody else can connect in the moment before chmod.
        let old = umask(Mode::from_bits_truncate(0o177));
        let bound = std::os::unix::net::UnixListener::bind(path);
        umask(old);
        let listener =
            bound.with_context(|| format!("serving clients on {} (--socket)", path.display()))?;
        let socket = Self {
            listener,
            path: path.to_path_buf(),
        };
        if let Some(gid) = gid {
            socket.open_to_group(gid)?;
        }
        socket
            .listener
            .set_nonblocking(true)
            .context("serving clients")?;
        Ok(socket)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_to_group(&self, gid: nix::unistd::Gid) -> Result<()> {
        chown(&self.path, None, Some(gid))
            .with_context(|| format!("giving {} to its group", self.path.display()))?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("letting its group use {}", self.path.display()))
    }

    /// Accepts clients until `stop`, each fed from `hub`; then closes the hub and gives the
    /// clients [`LAST_LINES_TIMEOUT`] to read what is queued for them.
    pub async fn serve(self, hub: Arc<Hub>, stop: oneshot::Receiver<()>) -> Result<()> {
        let listener = UnixListener::from_std(
            self.listener
                .try_clone()
                .context("serving clients on the async runtime")?,
        )
        .context("serving clients on the async runtime")?;
        let mut writers = JoinSet::new();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => admit(stream, &hub, &mut writers),
                    Err(e) => tracing::warn!("accepting a client on {}: {e}", self.path.display()),
                },
                Some(_) = writers.join_next(), if !writers.is_empty() => {}
            }
        }
        hub.close();
        let drained = tokio::time::timeout(LAST_LINES_TIMEOUT, async {
            while writers.join_next().await.is_some() {}
        });
        if drained.await.is_err() {
            tracing::info!("{} clients had not read their last lines", writers.len());
        }
        Ok(())
    }
}

impl Drop for ClientSocket {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("removing the socket {}: {e}", self.path.display());
        }
    }
}

/// A new client: its writer task, or a refusal when there are [`MAX_CLIENTS`] already.
fn admit(stream: UnixStream, hub: &Hub, writers: &mut JoinSet<()>) {
    let who = describe_peer(&stream);
    if writers.len() >= MAX_CLIENTS {
        tracing::warn!("turning {who} away: {MAX_CLIENTS} clients are connected already");
        return;
    }
    tracing::info!("{who} connected");
    let lines = hub.join();
    writers.spawn(serve_client(stream, lines, who));
}

/// `client pid 1234 (uid 0)`, from the socket's peer credentials.
fn describe_peer(stream: &UnixStream) -> String {
    match stream.peer_cred() {
        Ok(cred) => match cred.pid() {
            Some(pid) => format!("client pid {pid} (uid {})", cred.uid()),
            None => format!("a client of uid {}", cred.uid()),
        },
        Err(_) => "a client".into(),
    }
}

/// Writes the client's queue to it until the queue ends (the stream ended) or the client is
/// gone; what it sends is read and ignored.
async fn serve_client(stream: UnixStream, mut lines: Subscription, who: String) {
    let (input, mut output) = stream.into_split();
    let written = async {
        while let Some(next) = lines.next().await {
            output.write_all(&next).await?;
        }
        output.shutdown().await
    };
    tokio::select! {
        result = written => match result {
            Ok(()) => tracing::debug!("{who}: stream ended"),
            Err(e) => tracing::info!("{who} went away ({e})"),
        },
        () = ignore_input(input, &who) => {}
    }
}

/// Reads what a client sends and throws it away (clients only read), saying so once. Never
/// ends: a client that closed its sending side may still read.
async fn ignore_input(mut input: OwnedReadHalf, who: &str) {
    let mut buf = [0u8; 4096];
    let mut said = false;
    while let Ok(n @ 1..) = input.read(&mut buf).await {
        if !said {
            tracing::warn!("{who} sent {n} bytes; clients only read the stream: ignored");
            said = true;
        }
    }
    std::future::pending().await
}

/// The id of group `name`.
fn group_id(name: &str) -> Result<nix::unistd::Gid> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid),
        Ok(None) => bail!("no group named {name:?} (--socket-group)"),
        Err(e) => Err(e).with_context(|| format!("looking up the group {name:?}")),
    }
}

/// The socket's directory must exist.
fn check_directory(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "the socket's directory {} does not exist (--socket {}): create it, or choose \
             another path",
            dir.display(),
            path.display()
        );
    }
    Ok(())
}

/// Removes a socket file whose agent is gone; refuses a served socket or anything else.
fn replace_stale(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("looking at {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket: not replacing it (--socket)",
            path.display()
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!(
            "{} is served by a running agent: stop it, or give another --socket",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(
                "replacing {}, left by an agent that is gone",
                path.display()
            );
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("checking the socket {}", path.display())),
    }
}
