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

    /// Starts `config` (with `admin_token` set) with its admin listener on a port of its own
    /// too; returns the relay and the admin listener's address.
    pub fn start_with_admin(mut config: relay::Config) -> (Relay, std::net::SocketAddr) {
        config.memory = true;
        // Only says "not on the main listener": the admin listener is bound here.
        config.admin_listen = Some(([127, 0, 0, 1], 0).into());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let bind = |rt: &tokio::runtime::Runtime| {
            rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("bind")
        };
        let (listener, admin) = (bind(&rt), bind(&rt));
        let addr = listener.local_addr().expect("addr");
        let admin_addr = admin.local_addr().expect("admin addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let relay = relay::Relay::try_new(config).expect("a valid configuration");
                let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
                let server = relay.clone();
                let admin_task = tokio::spawn(async move {
                    server
                        .serve_admin(admin, async {
                            let _ = admin_stopped.await;
                        })
                        .await;
                });
                let shutdown = async move {
                    let _ = rx.await;
                };
                if let Err(e) = relay.serve(listener, shutdown).await {
                    eprintln!("relay stopped: {e}");
                }
                let _ = admin_stop.send(());
                let _ = admin_task.await;
            });
        });
        let relay = Relay {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        };
        (relay, admin_addr)
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
