//! The CRI client: the runtime's containers and pod sandboxes over its Unix socket, each
//! call under a deadline.
//!
//! gRPC comes from `tonic` and the messages from the official `runtime.v1` protos (the
//! `cri-api` crate of this workspace). The calls run on a small tokio runtime of the
//! directory's own ([`CriRuntime`]), so that blocking callers (attribution threads, `who`)
//! wait on a channel with a deadline and never block an async runtime of theirs.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    io,
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use cri_api::v1::{
    runtime_service_client::RuntimeServiceClient, ListContainersRequest, ListPodSandboxRequest,
    VersionRequest,
};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use super::PodNames;

/// Why the runtime could not be asked: each one line for the notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CriError {
    /// Nothing at the socket path.
    NoSocket(PathBuf),
    /// The path exists but is no socket.
    NotASocket(PathBuf),
    /// Connecting was refused for want of permission.
    Permission(PathBuf),
    /// No answer within the deadline.
    Timeout(PathBuf, Duration),
    /// The runtime does not implement CRI `runtime.v1` (too old).
    OldRuntime(PathBuf, String),
    /// Connecting failed otherwise, or the runtime answered with an error.
    Failed(PathBuf, String),
}

impl fmt::Display for CriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CriError::NoSocket(p) => write!(f, "no CRI socket at {}", p.display()),
            CriError::NotASocket(p) => write!(f, "{} is not a socket", p.display()),
            CriError::Permission(p) => write!(
                f,
                "no permission to connect to {} (run as root, or give the agent read access to the socket)",
                p.display()
            ),
            CriError::Timeout(p, d) => {
                write!(f, "the runtime at {} did not answer within {d:?}", p.display())
            }
            CriError::OldRuntime(p, why) => write!(
                f,
                "the runtime at {} does not speak CRI runtime.v1 ({why}); containerd 1.6+, CRI-O 1.20+ and cri-dockerd do",
                p.display()
            ),
            CriError::Failed(p, why) => write!(f, "asking the runtime at {}: {why}", p.display()),
        }
    }
}

/// What one runtime answered: its containers (and sandboxes, by their own id) named.
#[derive(Debug, Default)]
pub struct Listing {
    /// Container id (and sandbox id) → names.
    pub names: HashMap<String, PodNames>,
    /// `runtime_name runtime_version`, for the log.
    pub runtime: String,
}

/// A tokio runtime of one worker thread that runs the CRI calls; shut down in the
/// background when dropped (it may be dropped from inside another runtime).
pub struct CriRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl CriRuntime {
    /// Starts the worker thread.
    pub fn start() -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cri")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Runs `call` on the worker and waits at most `deadline` for its result.
    fn run<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, CriError>> + Send + 'static,
        deadline: Duration,
        timeout: CriError,
    ) -> Result<T, CriError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let late = timeout.clone();
        let runtime = self.runtime.as_ref().expect("running");
        runtime.spawn(async move {
            let answer = tokio::time::timeout(deadline, call)
                .await
                .unwrap_or(Err(late));
            let _ = tx.send(answer);
        });
        // The worker's own timeout answers first; this one only guards against a stuck worker.
        rx.recv_timeout(deadline + Duration::from_millis(200))
            .unwrap_or(Err(timeout))
    }
}

impl Drop for CriRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A client of one runtime's CRI socket. The connection is kept between calls and made
/// again after a failure.
pub struct CriClient {
    socket: PathBuf,
    runtime: Arc<CriRuntime>,
    channel: Arc<Mutex<Option<Channel>>>,
}

impl CriClient {
    /// A client of `socket`, its calls run on `runtime`. Connects at the first call.
    pub fn new(socket: PathBuf, runtime: Arc<CriRuntime>) -> Self {
        Self {
            socket,
            runtime,
            channel: Arc::default(),
        }
    }

    /// The socket this client asks.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Every container and pod sandbox the runtime knows (running or not), with its names.
    pub fn list(&self, deadline: Duration) -> Result<Listing, CriError> {
        check_socket(&self.socket)?;
        let socket = self.socket.clone();
        let kept = self.channel.clone();
        let call = async move {
            let channel = channel(&socket, &kept).await?;
            list_all(&socket, channel).await
        };
        let timeout = CriError::Timeout(self.socket.clone(), deadline);
        let answer = self.runtime.run(call, deadline, timeout);
        // A failed or late call: the next one connects again.
        if answer.is_err() {
            self.channel.lock().expect("channel lock").take();
        }
        answer
    }
}

/// Fails early, with the precise reason, when `socket` cannot be a CRI socket.
fn check_socket(socket: &Path) -> Result<(), CriError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(socket) {
        Ok(m) if m.file_type().is_socket() => Ok(()),
        Ok(_) => Err(CriError::NotASocket(socket.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            Err(CriError::Permission(socket.to_owned()))
        }
        Err(_) => Err(CriError::NoSocket(socket.to_owned())),
    }
}

/// The kept channel, or a new connection.
async fn channel(socket: &Path, kept: &Mutex<Option<Channel>>) -> Result<Channel, CriError> {
    if let Some(channel) = kept.lock().expect("channel lock").clone() {
        return Ok(channel);
    }
    let path = socket.to_owned();
    let connected =
        Endpoint::from_static("http://cri.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
                }
            }))
            .await
            .map_err(|e| connect_error(socket, &e))?;
    *kept.lock().expect("channel lock") = Some(connected.clone());
    Ok(connected)
}

/// A connection failure in words: permission is the one an operator can fix.
fn connect_error(socket: &Path, e: &tonic::transport::Error) -> CriError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::PermissionDenied => CriError::Permission(socket.to_owned()),
                io::ErrorKind::NotFound => CriError::NoSocket(socket.to_owned()),
                _ => CriError::Failed(socket.to_owned(), io.to_string()),
            };
        }
        source = err.source();
    }
    CriError::Failed(socket.to_owned(), e.to_string())
}

/// `Version`, `ListPodSandbox` and `ListContainers`, joined by sandbox id.
async fn list_all(socket: &Path, channel: Channel) -> Result<Listing, CriError> {
    let mut client = RuntimeServiceClient::new(channel);
    let failed = |s: tonic::Status| status_error(socket, s);
    let version = client
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .map_err(failed)?
        .into_inner();
    let sandboxes = client
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .map_err(failed)?
        .into_inner()
        .items;
    let containers = client
        .list_containers(ListContainersRequest { filter: None })
        .await
        .map_err(failed)?
        .into_inner()
        .containers;
    let mut names: HashMap<String, PodNames> = sandboxes
        .into_iter()
        .filter_map(|s| {
            let m = s.metadata?;
            let names = PodNames {
                pod: m.name,
                namespace: m.namespace,
                uid: m.uid,
                container: None,
                image: None,
            };
            Some((s.id, names))
        })
        .collect();
    for c in containers {
        let Some(sandbox) = names.get(&c.pod_sandbox_id).cloned() else {
            continue;
        };
        let named = PodNames {
            container: c.metadata.map(|m| m.name),
            image: c.image.map(|i| i.image).filter(|i| !i.is_empty()),
            ..sandbox
        };
        names.insert(c.id, named);
    }
    Ok(Listing {
        names,
        runtime: format!("{} {}", version.runtime_name, version.runtime_version),
    })
}

/// A gRPC status in words; `Unimplemented` means an older CRI version only.
fn status_error(socket: &Path, s: tonic::Status) -> CriError {
    match s.code() {
        tonic::Code::Unimplemented => {
            CriError::OldRuntime(socket.to_owned(), s.message().to_owned())
        }
        tonic::Code::PermissionDenied => CriError::Permission(socket.to_owned()),
        _ => CriError::Failed(
            socket.to_owned(),
            format!("{:?}: {}", s.code(), s.message()),
        ),
    }
}
