//! The real relay in-process on a port of its own (port 0), with the configuration a test
//! chooses; shut down when dropped.

/// A relay on its own runtime thread.
pub struct Relay {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Starts `config` with history in memory (tests leave no data directory behind).
    pub fn start(mut config: relay::Config) -> Relay {
        config.memory = true;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let shutdown = async move {
                let _ = rx.await;
            };
            if let Err(e) = rt.block_on(relay::run(listener, config, shutdown)) {
                eprintln!("relay stopped: {e}");
            }
        });
        Relay {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The main listener serves `/metrics` too.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
