//! The TCP route: a byte relay (gRPC over HTTP/2 is multiplexed, so faults are per connection
//! and placed at byte offsets rather than per request).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::Kind;
use crate::faults::{RouteFaults, TcpPlan};

pub async fn serve(client: TcpStream, upstream: Arc<str>, route: Arc<RouteFaults>) {
    let (index, mut rng) = route.next_rng();
    let plan = TcpPlan::draw(&route.faults, &mut rng);
    let server = match TcpStream::connect(&*upstream).await {
        Ok(s) => s,
        Err(e) => {
            // Dropping the client is all a byte relay can say.
            eprintln!("faultproxy: {}: connecting to {upstream}: {e}", route.name);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let conn = Relay {
        index,
        plan,
        route,
        relayed: AtomicU64::new(0),
        cut: AtomicBool::new(false),
        stalled: AtomicBool::new(false),
        paused_until: Mutex::new(None),
    };
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let up = conn.pump(client_r, server_w);
    let down = conn.pump(server_r, client_w);
    tokio::pin!(up, down);
    // Each direction ends on its own (a half-close is passed on), but a cut ends both at
    // once: returning drops the other direction's halves, and the zero linger set by the
    // cut makes that a reset on both sockets.
    tokio::select! {
        cut = &mut up => if !cut { down.await; },
        cut = &mut down => if !cut { up.await; },
    }
}

struct Relay {
    index: u64,
    plan: TcpPlan,
    route: Arc<RouteFaults>,
    /// Bytes relayed so far, both directions together.
    relayed: AtomicU64,
    cut: AtomicBool,
    stalled: AtomicBool,
    /// Set by the stall fault; each direction waits it out before its next write.
    paused_until: Mutex<Option<Instant>>,
}

impl Relay {
    /// Copies one direction until EOF, an error or the cut. Returns whether it was the cut.
    async fn pump(&self, mut from: OwnedReadHalf, mut to: OwnedWriteHalf) -> bool {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n as u64,
            };
            let before = self.relayed.fetch_add(n, Ordering::SeqCst);
            let crosses = |at: u64| before < at && at <= before + n;
            if self.plan.stall_after.is_some_and(crosses)
                && !self.stalled.swap(true, Ordering::SeqCst)
            {
                self.record(Kind::Stall, self.plan.stall_after);
                let until = Instant::now() + self.route.stall;
                *self.paused_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
            }
            let paused = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(until) = paused {
                tokio::time::sleep_until(until).await;
            }
            if let Some(at) = self.plan.reset_after.filter(|at| before + n >= *at) {
                if !self.cut.swap(true, Ordering::SeqCst) {
                    self.record(Kind::Reset, Some(at));
                    let keep = at.saturating_sub(before) as usize;
                    let _ = to.write_all(&buf[..keep]).await;
                }
                let _ = from.as_ref().set_zero_linger();
                let _ = to.as_ref().set_zero_linger();
                return true;
            }
            if to.write_all(&buf[..n as usize]).await.is_err() {
                break;
            }
        }
        // Pass the half-close on; the other direction may still have bytes to carry.
        let _ = to.shutdown().await;
        false
    }

    fn record(&self, kind: Kind, at: Option<u64>) {
        let what = format!("connection {} byte {}", self.index, at.unwrap_or(0));
        self.route.record(kind, &what, None);
    }
}
