//! The background sweep: a thread that drops expired state every `cleanup_interval`, and stops with its store.

use std::sync::Weak;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

/// Owns the sweep thread. Dropping it stops the thread and waits for it (unless it is the thread itself that
/// drops it, which happens when the store's last handle goes away during a sweep).
pub(super) struct Sweeper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    id: ThreadId,
}

impl Sweeper {
    /// Starts a thread that calls `sweep` on the target every `interval` until the target is gone or the
    /// sweeper is dropped.
    pub(super) fn start<T: Send + Sync + 'static>(
        target: Weak<T>,
        interval: Duration,
        sweep: fn(&T),
    ) -> std::io::Result<Sweeper> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new().name("floodgate-sweep".into()).spawn(move || {
            loop {
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                let Some(target) = target.upgrade() else { return };
                sweep(&target);
            }
        })?;
        let id = thread.thread().id();
        Ok(Sweeper { stop: Some(stop), thread: Some(thread), id })
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if thread::current().id() != self.id
            && let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the floodgate sweep thread panicked");
        }
    }
}
