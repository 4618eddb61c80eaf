//! A panic on a store thread (here: a queue-growth listener that panics on the dispatcher) is
//! logged through `tracing` with its message and location, and poisons the store for writes
//! (a clear error instead of writes that would never be dispatched).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use store::{MessageInner, MessageStore, StoreConfig};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

#[test]
fn a_store_thread_panic_is_logged_and_poisons_writes() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(StoreConfig::new(dir.path())).expect("open");
    store.subscribe_queue_growth(Arc::new(|_| panic!("listener exploded")));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        store
            .put_message(MessageInner::new("T", 0, "x"))
            .await
            .expect("first put");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match store.put_message(MessageInner::new("T", 0, "y")).await {
                Err(e) => {
                    assert!(e.to_string().contains("listener exploded"), "{e}");
                    break;
                }
                Ok(_) => {
                    assert!(Instant::now() < deadline, "writes were not refused");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    let _ = store.shutdown();
    let text = log.text();
    assert!(
        text.contains("store thread panicked")
            && text.contains("listener exploded")
            && text.contains("thread_panic.rs:"),
        "panic not logged with its message and location:\n{text}"
    );
}
